/* Unit tests of the JSON builder and the bounded parser. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "api/json.h"

static void test_build_document(void **state)
{
	struct json_out o;
	size_t len;
	char *s;

	assert_true(json_out_init(&o, 1024));
	json_out_object_begin(&o);
	json_out_key(&o, "allOrNone");
	json_out_bool(&o, true);
	json_out_key(&o, "records");
	json_out_array_begin(&o);
	json_out_string(&o, "a\"b\\c\n\t/\x01");
	json_out_int(&o, -42);
	json_out_number_text(&o, "3.25e-2", 7);
	json_out_null(&o);
	json_out_string(&o, "Zo\xc3\xab \xe2\x82\xac");
	json_out_array_end(&o);
	json_out_object_end(&o);
	assert_true(json_out_ok(&o));
	s = json_out_take(&o, &len);
	assert_non_null(s);
	assert_string_equal(s, "{\"allOrNone\":true,\"records\":[\"a\\\"b\\\\c\\n\\t/\\u0001\",-42,"
	                       "3.25e-2,null,\"Zo\xc3\xab \xe2\x82\xac\"]}");
	assert_int_equal(len, strlen(s));
	free(s);
	json_out_free(&o);
}

static void test_build_cap_is_sticky(void **state)
{
	struct json_out o;
	size_t len;

	assert_true(json_out_init(&o, 16));
	json_out_array_begin(&o);
	json_out_string(&o, "0123456789abcdef");
	assert_false(json_out_ok(&o));
	assert_non_null(strstr(o.error, "too large"));
	/* nothing more is appended after a failure, and no document comes out */
	json_out_array_end(&o);
	assert_true(o.len <= 16);
	assert_null(json_out_take(&o, &len));
	json_out_free(&o);
}

static void test_build_rejects_bad_input(void **state)
{
	struct json_out o;
	size_t len;

	assert_true(json_out_init(&o, 1024));
	json_out_string(&o, "\xff\xfe");
	assert_false(json_out_ok(&o));
	json_out_free(&o);

	assert_true(json_out_init(&o, 1024));
	json_out_array_begin(&o);
	json_out_number_text(&o, "1; drop", 7);
	assert_false(json_out_ok(&o));
	json_out_free(&o);

	assert_true(json_out_init(&o, 1024));
	json_out_object_begin(&o);
	json_out_int(&o, 1); /* a number where a key belongs */
	assert_false(json_out_ok(&o));
	json_out_free(&o);

	/* incomplete document */
	assert_true(json_out_init(&o, 1024));
	json_out_array_begin(&o);
	assert_true(json_out_ok(&o));
	assert_null(json_out_take(&o, &len));
	json_out_free(&o);
}

static void test_number_text(void **state)
{
	static const struct {
		const char *t;
		bool ok;
	} cases[] = {
	        {"0", true},    {"-0", true},        {"12", true},  {"1.5", true},  {"1e9", true},
	        {"1E+9", true}, {"-2.5e-3", true},   {"", false},   {"-", false},   {"01", false},
	        {"1.", false},  {".5", false},       {"1e", false}, {"NaN", false}, {"1 ", false},
	        {"+1", false},  {"Infinity", false},
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_int_equal(json_is_number_text(cases[i].t, strlen(cases[i].t)), cases[i].ok);
}

static void test_parse_tree(void **state)
{
	static const char doc[] = "[{\"id\":\"003xx\",\"success\":true,\"errors\":[]},"
	                          "{\"n\":-1.5e2,\"s\":\"a\\u00e9\\u20ac\\ud83d\\ude00\\n\","
	                          "\"z\":\"x\\u0000y\",\"nil\":null}]";
	struct json_value *v;
	const struct json_value *r0, *r1;
	char err[128];

	assert_true(json_parse(doc, strlen(doc), NULL, &v, err, sizeof(err)));
	assert_int_equal(v->kind, JSON_ARRAY);
	assert_int_equal(v->count, 2);
	r0 = json_at(v, 0);
	assert_string_equal(json_get_string(r0, "id"), "003xx");
	assert_int_equal(json_get(r0, "success")->kind, JSON_BOOL);
	assert_true(json_get(r0, "success")->boolean);
	assert_int_equal(json_get(r0, "errors")->count, 0);
	assert_null(json_get(r0, "missing"));
	r1 = json_at(v, 1);
	assert_true(json_get(r1, "n")->number == -150.0);
	assert_string_equal(json_get(r1, "n")->str, "-1.5e2");
	assert_string_equal(json_get_string(r1, "s"), "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\n");
	assert_int_equal(json_get(r1, "z")->len, 3);
	assert_memory_equal(json_get(r1, "z")->str, "x\0y", 4);
	assert_int_equal(json_get(r1, "nil")->kind, JSON_NULL);
	assert_null(json_at(v, 2));
	assert_null(json_get(v, "id"));
	assert_string_equal(json_kind_str(JSON_OBJECT), "object");
	json_free(v);
}

static void test_parse_failures(void **state)
{
	static const struct {
		const char *doc;
		const char *why;
	} cases[] = {
	        {"", "invalid JSON"},         {"[1,2", "invalid JSON"},
	        {"{\"a\":}", "invalid JSON"}, {"<html>Service Unavailable</html>", "invalid JSON"},
	        {"[1] [2]", "invalid JSON"},  {"{\"a\":1,}", "invalid JSON"},
	        {"\"\xff\"", "invalid JSON"}, {"[1] // c", "invalid JSON"},
	        {"[tru]", "invalid JSON"},
	};
	struct json_value *v = (void *)1;
	char err[128];
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err[0] = '\0';
		assert_false(
		        json_parse(cases[i].doc, strlen(cases[i].doc), NULL, &v, err, sizeof(err)));
		assert_null(v);
		if (strstr(err, cases[i].why) == NULL)
			fail_msg("case %zu: %s", i, err);
	}
}

static void test_value_round_trip(void **state)
{
	static const char doc[] = "{\"k\":[1,-2.5e3,\"s\\\"q\",null,false,{\"z\\u0000y\":{}},[]]}";
	struct json_value *v;
	char err[128], *text;
	size_t len;

	assert_true(json_parse(doc, strlen(doc), NULL, &v, err, sizeof(err)));
	text = json_to_text(v, 1024, &len);
	assert_non_null(text);
	assert_string_equal(text, "{\"k\":[1,-2.5e3,\"s\\\"q\",null,false,{\"z\\u0000y\":{}},[]]}");
	assert_int_equal(len, strlen(text));
	free(text);
	assert_null(json_to_text(v, 10, &len)); /* over the cap */
	json_free(v);
}

static void test_parse_limits(void **state)
{
	struct json_limits lim = {.max_bytes = 64, .max_depth = 3, .max_nodes = 5};
	struct json_value *v;
	char err[128];
	char big[100];

	assert_true(json_parse("[[[1]]]", 7, &lim, &v, err, sizeof(err)));
	json_free(v);
	assert_false(json_parse("[[[[1]]]]", 9, &lim, &v, err, sizeof(err)));
	assert_non_null(strstr(err, "too deep"));
	assert_false(json_parse("[1,2,3,4,5]", 11, &lim, &v, err, sizeof(err)));
	assert_non_null(strstr(err, "too many"));
	memset(big, ' ', sizeof(big));
	big[0] = '1';
	assert_false(json_parse(big, sizeof(big), &lim, &v, err, sizeof(err)));
	assert_non_null(strstr(err, "too large"));
}

static void test_parse_deep_default(void **state)
{
	/* 100k nested arrays must fail cleanly, not recurse the stack away */
	size_t n = 100000, i;
	char *s = malloc(2 * n);
	struct json_value *v;
	char err[128];

	assert_non_null(s);
	for (i = 0; i < n; i++) {
		s[i] = '[';
		s[2 * n - 1 - i] = ']';
	}
	assert_false(json_parse(s, 2 * n, NULL, &v, err, sizeof(err)));
	assert_non_null(strstr(err, "too deep"));
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_build_document),
	        cmocka_unit_test(test_build_cap_is_sticky),
	        cmocka_unit_test(test_build_rejects_bad_input),
	        cmocka_unit_test(test_number_text),
	        cmocka_unit_test(test_parse_tree),
	        cmocka_unit_test(test_parse_failures),
	        cmocka_unit_test(test_value_round_trip),
	        cmocka_unit_test(test_parse_limits),
	        cmocka_unit_test(test_parse_deep_default),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

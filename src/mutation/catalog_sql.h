/*
 * catalog_sql — the SQL text of the synced-table catalog: the `syncbouncer` schema (capture and
 * confirmed stores, meta), the guard trigger function, and the queries the catalog runs.
 * Included by src/mutation/catalog.c only; others get the text through catalog.h.
 *
 * The contract with the mutation pipeline (transaction-local settings, per mode):
 *   syncbouncer.mode      capture | apply | sync; anything else: the write is refused (42501)
 *   syncbouncer.conflict  '' | 'nothing' (INSERT ... ON CONFLICT DO NOTHING)
 *   syncbouncer.seq       row counter of the statement; the pipeline sets it to '0' before each
 *                         run, the trigger adds one per row
 *   syncbouncer.standin   check run of an INSERT: 'text' or 'number' when every row got a
 *                         stand-in key of that kind, 'mixed' otherwise (set by the trigger)
 *   syncbouncer.applied   apply: the rows the statement wrote, counted by the AFTER ROW trigger
 *                         syncbouncer_guard_applied (syncbouncer.applied()) as PostgreSQL writes
 *                         them; the pipeline sets it to '0' before the apply run
 * capture: each row's images go to syncbouncer.capture (xid, seq, tbl, op, old, new) and the row
 *          is dropped (RETURN NULL); UPDATE/DELETE rows stay locked until the end of the
 *          transaction. An INSERT whose key already exists (in the table or earlier in the same
 *          statement) raises 23505 as PostgreSQL would, or is skipped silently with
 *          conflict = 'nothing'.
 * apply:   INSERT takes syncbouncer.confirmed's row (xid, seq); UPDATE and DELETE the one whose
 *          key is the old row's key (as `to_jsonb(old) ->> pk` renders it). Found: the row goes
 *          ahead, merged with `fields` (API values win); not found: the row is dropped. Each
 *          row written (after every BEFORE trigger of the table, ON CONFLICT and the WHERE
 *          clause had their say) adds one to syncbouncer.applied; apply_end(rows, id, key), in
 *          the same flight as the COMMIT, raises (XX000) unless that count is the number of
 *          rows the API confirmed, so that the COMMIT never runs after a partial apply.
 *          In capture, an UPDATE or DELETE of a row named in the keys of a syncbouncer.intent
 *          row raises 40001: that row's earlier write is not settled yet (a writer still in
 *          flight holds the row lock, so only intents whose writer is gone are seen).
 * sync:    rows go through unchanged. TRUNCATE is refused (0A000) in every other mode.
 *
 * syncbouncer.intent is the write-ahead record of API requests (include/mutation/settle.h):
 * written and committed before a request leaves, deleted in the transaction that applies its
 * answer, or by settling. Unlike capture and confirmed it is logged and seen by every session,
 * and its rows outlive their writers with the row images of writes: only its owner (the role
 * that installed the schema, which the settler and the sync worker connect as) may use it.
 * A write's own connection runs as whatever role the pool logs in as, so it reaches the table
 * only through SECURITY DEFINER functions owned by the installer, which reveal no images:
 *   intent_record(...)            (a procedure) records an intent of a table that has the guard and that the
 *                                 session's role may write with that operation (else 42501)
 *   intent_forget(id, key)        (a procedure) deletes an intent, given its idempotency key as well (never
 *                                 shown to clients), so no one else can drop another's intent
 *   intent_blocking(tbl, key)     the id of an intent holding that row, or null (the guard)
 *   intent_unsettled_insert(tbl)  an unsettled insert's id: no writer holds it (takes its lock)
 *                                 or a settler is at it
 *   apply_end(rows, id, key)      the end of an apply transaction, before its COMMIT: checks
 *                                 the count of rows applied, empties the confirmed rows and
 *                                 deletes the intent (as intent_forget), all or nothing
 * The two lookups answer only a role that may update or delete the table.
 *
 * Installation is idempotent: IF NOT EXISTS for the schema and tables, CREATE OR REPLACE for the
 * function, the version row upserted, all under one advisory lock in one implicit transaction.
 * Capture and confirmed rows are only ever written and deleted inside the pipeline's own
 * transaction, so no other session ever sees them: PUBLIC may use both tables. Each
 * installation revokes PUBLIC's rights on the intents again (an upgrade from version 5).
 */
#ifndef SB_MUTATION_CATALOG_SQL_H
#define SB_MUTATION_CATALOG_SQL_H

#include "mutation/settle.h" /* SETTLE_LOCK_BIT */

/*
 * Bump when the text below changes: installed databases with an older version get it again;
 * a database with a newer one is left alone (catalog.c), and the meta_version trigger below
 * refuses any install that would lower the recorded version (an older pooler's, or ours when a
 * newer one installed between our check and our install), so that the whole install, one
 * transaction, rolls back.
 */
#define CATALOG_SQL_VERSION_NUM 11
#define CATALOG_SQL_STR_(x)     #x
#define CATALOG_SQL_STR(x)      CATALOG_SQL_STR_(x)
#define CATALOG_SQL_VERSION     CATALOG_SQL_STR(CATALOG_SQL_VERSION_NUM)

/* Key of pg_advisory_xact_lock() around installation: two poolers may start together. */
#define CATALOG_SQL_LOCK_KEY "7306086135451738930"

/* Simple-protocol text: runs as one implicit transaction (all or nothing). */
static const char catalog_sql_schema[] =
        "select pg_catalog.pg_advisory_xact_lock(" CATALOG_SQL_LOCK_KEY ");\n"
        "create schema if not exists syncbouncer;\n"
        "comment on schema syncbouncer is"
        " 'syncbouncer: guard triggers of API-synced tables and the mutation stores';\n"
        "create unlogged table if not exists syncbouncer.capture (\n"
        "\txid xid8 not null,\n"
        "\tseq int not null,\n"
        "\ttbl oid not null,\n"
        "\top \"char\" not null,\n"
        "\told jsonb,\n"
        "\tnew jsonb,\n"
        "\tprimary key (xid, seq)\n"
        ");\n"
        "create unlogged table if not exists syncbouncer.confirmed (\n"
        "\txid xid8 not null,\n"
        "\tseq int not null,\n"
        "\ttbl oid not null,\n"
        "\tkey text,\n"
        "\tfields jsonb,\n"
        "\tprimary key (xid, seq)\n"
        ");\n"
        "create table if not exists syncbouncer.intent (\n"
        "\tid int8 primary key,\n"
        "\ttbl oid not null,\n"
        "\ttbl_name text not null,\n"
        "\top \"char\" not null,\n"
        "\tapi text not null,\n"
        "\trows jsonb not null,\n"
        "\tkeys text[] not null,\n"
        "\tidempotency_key text not null,\n"
        "\tanswer jsonb,\n"
        "\tcreated timestamptz not null default pg_catalog.now(),\n"
        "\tattempts int not null default 0,\n"
        "\tlast_error text,\n"
        "\towner text\n"
        ");\n"
        "create index if not exists intent_tbl on syncbouncer.intent (tbl);\n"
        /*
         * the guard's per-row check of UPDATE and DELETE looks rows up by key; without a
         * pending list, so that a lookup never scans what the last inserts left unmerged
         */
        "create index if not exists intent_keys on syncbouncer.intent using gin (keys)"
        " with (fastupdate = off);\n"
        "create table if not exists syncbouncer.meta (\n"
        "\tkey text primary key,\n"
        "\tvalue text\n"
        ");\n"
        "grant usage on schema syncbouncer to public;\n"
        "grant select, insert, update, delete on syncbouncer.capture, syncbouncer.confirmed"
        " to public;\n"
        "grant select on syncbouncer.meta to public;\n"
        /* the intents: readable and writable by their owner alone (version 5 granted PUBLIC) */
        "revoke all on syncbouncer.intent from public;\n"
        "create or replace procedure syncbouncer.intent_record(p_id int8, p_tbl oid,"
        " p_tbl_name text, p_op \"char\", p_api text, p_rows jsonb, p_keys jsonb,"
        " p_idempotency_key text, p_owner text)\n"
        "language plpgsql security definer set search_path = pg_catalog, pg_temp"
        " as $f$\n"
        "begin\n"
        "\tif not coalesce(pg_catalog.has_table_privilege(session_user, p_tbl, case p_op"
        " when 'I' then 'INSERT' when 'U' then 'UPDATE' when 'D' then 'DELETE' end), false)"
        " or not exists (select from pg_catalog.pg_trigger t where t.tgrelid = p_tbl"
        " and t.tgname = 'syncbouncer_guard') then\n"
        "\t\traise exception using errcode = '42501',\n"
        "\t\t\tmessage = pg_catalog.format('permission denied to record a write of %s',"
        " p_tbl_name);\n"
        "\tend if;\n"
        "\tinsert into syncbouncer.intent (id, tbl, tbl_name, op, api, rows, keys,"
        " idempotency_key, owner)\n"
        "\t\tvalues (p_id, p_tbl, p_tbl_name, p_op, p_api, p_rows,"
        " array(select pg_catalog.jsonb_array_elements_text(p_keys)), p_idempotency_key,"
        " p_owner);\n"
        "end\n"
        "$f$;\n"
        "create or replace procedure syncbouncer.intent_forget(p_id int8,"
        " p_idempotency_key text)\n"
        "language sql security definer set search_path = pg_catalog, pg_temp as $f$\n"
        "\tdelete from syncbouncer.intent where id = p_id"
        " and idempotency_key = p_idempotency_key\n"
        "$f$;\n"
        "create or replace function syncbouncer.intent_blocking(p_tbl oid, p_key text)"
        " returns int8\n"
        "language sql stable security definer set search_path = pg_catalog, pg_temp as $f$\n"
        /* no LIMIT: with one the planner would rather scan, hoping for an early row */
        "\tselect i.id from syncbouncer.intent i\n"
        "\t\twhere i.tbl = p_tbl and i.keys @> array[p_key]\n"
        "\t\tand (pg_catalog.has_table_privilege(session_user, p_tbl, 'UPDATE')\n"
        "\t\t\tor pg_catalog.has_table_privilege(session_user, p_tbl, 'DELETE'))\n"
        "$f$;\n"
        "create or replace function syncbouncer.intent_unsettled_insert(p_tbl oid)"
        " returns setof int8\n"
        "language plpgsql volatile security definer set search_path = pg_catalog, pg_temp"
        " as $f$\n"
        "begin\n"
        "\t-- only a role that may update or delete the table takes the intents' locks\n"
        "\tif not coalesce(pg_catalog.has_table_privilege(session_user, p_tbl, 'UPDATE')"
        " or pg_catalog.has_table_privilege(session_user, p_tbl, 'DELETE'), false) then\n"
        "\t\treturn;\n"
        "\tend if;\n"
        "\treturn query select i.id from syncbouncer.intent i"
        " where i.tbl = p_tbl and i.op = 'I'\n"
        "\t\tand (pg_catalog.pg_try_advisory_xact_lock(i.id) or not"
        " pg_catalog.pg_try_advisory_xact_lock_shared(i.id # " SETTLE_LOCK_BIT "))"
        " limit 1;\n"
        "end\n"
        "$f$;\n"
        /*
         * the end of an apply transaction: the apply run must have written exactly the rows
         * the API confirmed (counted as PostgreSQL wrote them), else nothing is committed;
         * then the confirmed rows go and the intent with them, in the transaction that commits
         */
        "create or replace procedure syncbouncer.apply_end(p_rows int, p_id int8,"
        " p_idempotency_key text)\n"
        "language plpgsql security definer set search_path = pg_catalog, pg_temp as $f$\n"
        "declare\n"
        "\tv_applied int := coalesce(nullif(pg_catalog.current_setting('syncbouncer.applied',"
        " true), ''), '0')::int;\n"
        "begin\n"
        "\tif v_applied <> p_rows then\n"
        "\t\traise exception using errcode = 'XX000',\n"
        "\t\t\tmessage = pg_catalog.format('the second run wrote %s row(s) where the API"
        " confirmed %s', v_applied, p_rows);\n"
        "\tend if;\n"
        "\tdelete from syncbouncer.confirmed where xid = pg_catalog.pg_current_xact_id();\n"
        "\tdelete from syncbouncer.intent where id = p_id"
        " and idempotency_key = p_idempotency_key;\n"
        "end\n"
        "$f$;\n"
        "create or replace function syncbouncer.applied() returns trigger\n"
        "language plpgsql as $f$\n"
        "begin\n"
        "\tif pg_catalog.current_setting('syncbouncer.mode', true) = 'apply' then\n"
        "\t\tperform pg_catalog.set_config('syncbouncer.applied', (coalesce(nullif("
        "pg_catalog.current_setting('syncbouncer.applied', true), ''), '0')::int + 1)::text,"
        " true);\n"
        "\tend if;\n"
        "\treturn null;\n"
        "end\n"
        "$f$;\n"
        "revoke all on routine syncbouncer.intent_record(int8, oid, text, \"char\", text,"
        " jsonb, jsonb, text, text), syncbouncer.intent_forget(int8, text),"
        " syncbouncer.intent_blocking(oid, text), syncbouncer.intent_unsettled_insert(oid),"
        " syncbouncer.apply_end(int, int8, text)"
        " from public;\n"
        "grant execute on routine syncbouncer.intent_record(int8, oid, text, \"char\", text,"
        " jsonb, jsonb, text, text), syncbouncer.intent_forget(int8, text),"
        " syncbouncer.intent_blocking(oid, text), syncbouncer.intent_unsettled_insert(oid),"
        " syncbouncer.apply_end(int, int8, text)"
        " to public;\n"
        "create or replace function syncbouncer.guard() returns trigger\n"
        "language plpgsql as $guard$\n"
        "declare\n"
        "\tv_mode text := pg_catalog.current_setting('syncbouncer.mode', true);\n"
        "\tv_pk text := tg_argv[0];\n"
        "\tv_seq int;\n"
        "\tv_key text;\n"
        "\tv_fields jsonb;\n"
        "\tv_xid xid8;\n"
        "\tv_conname text;\n"
        "\tv_exists bool;\n"
        "\tv_intent int8;\n"
        "\tv_kind text := 'mixed';\n"
        "begin\n"
        "\tif tg_level = 'STATEMENT' then\n"
        "\t\tif v_mode = 'sync' then\n"
        "\t\t\treturn null;\n"
        "\t\tend if;\n"
        "\t\traise exception using errcode = '0A000',\n"
        "\t\t\tmessage = pg_catalog.format('cannot truncate table \"%s.%s\": it is synced with"
        " an API', tg_table_schema, tg_table_name),\n"
        "\t\t\thint = 'Delete the rows through syncbouncer instead.',\n"
        "\t\t\tschema = tg_table_schema, table = tg_table_name;\n"
        "\tend if;\n"
        "\tif v_mode is null or v_mode not in ('capture', 'check', 'apply', 'sync') then\n"
        "\t\traise exception using errcode = '42501',\n"
        "\t\t\tmessage = pg_catalog.format('table \"%s.%s\" is synced with an API: write to it"
        " through syncbouncer', tg_table_schema, tg_table_name),\n"
        "\t\t\thint = 'Connect through the syncbouncer proxy: it sends the change to the API"
	" first, then writes it here. Through the proxy, name the table with its schema, or set"
	" search_path at login or with SET search_path (the proxy follows no other way of"
	" setting it).',\n"
        "\t\t\tschema = tg_table_schema, table = tg_table_name;\n"
        "\tend if;\n"
        "\tif v_mode = 'sync' then\n"
        "\t\tif tg_op = 'DELETE' then\n"
        "\t\t\treturn old;\n"
        "\t\tend if;\n"
        "\t\treturn new;\n"
        "\tend if;\n"
        "\tif v_mode = 'check' then\n"
        "\t\t-- the captured rows, written for real inside a savepoint that is rolled back:\n"
        "\t\t-- PostgreSQL checks CHECK, UNIQUE, foreign keys and types before the API call\n"
        "\t\tif tg_op = 'DELETE' then\n"
        "\t\t\treturn old;\n"
        "\t\tend if;\n"
        "\t\tif tg_op = 'INSERT' and pg_catalog.to_jsonb(new) -> v_pk = 'null'::jsonb then\n"
        "\t\t\t-- the API assigns the key: a stand-in for it, unless a CHECK or foreign key\n"
        "\t\t\t-- reads the key (the stand-in would fail it): then the row is not checked.\n"
        "\t\t\t-- A text stand-in names the backend: concurrent writes never wait for each\n"
        "\t\t\t-- other's check run on the key's unique index\n"
        "\t\t\tif exists (select from pg_catalog.pg_constraint k\n"
        "\t\t\t\t\tjoin pg_catalog.pg_attribute a on a.attrelid = k.conrelid\n"
        "\t\t\t\t\tand a.attnum = any (k.conkey)\n"
        "\t\t\t\t\twhere k.conrelid = tg_relid and k.contype in ('c', 'f')\n"
        "\t\t\t\t\tand a.attname = v_pk) then\n"
        "\t\t\t\tperform pg_catalog.set_config('syncbouncer.standin', 'mixed', true);\n"
        "\t\t\t\treturn null;\n"
        "\t\t\tend if;\n"
        "\t\t\tv_seq := coalesce(nullif(pg_catalog.current_setting('syncbouncer.seq', true),"
        " ''), '0')::int + 1;\n"
        "\t\t\tperform pg_catalog.set_config('syncbouncer.seq', v_seq::text, true);\n"
        "\t\t\tbegin\n"
        "\t\t\t\tnew := pg_catalog.jsonb_populate_record(new,"
        " pg_catalog.jsonb_build_object(v_pk, '~sb' || pg_catalog.pg_backend_pid() || '.' ||"
        " v_seq));\n"
        "\t\t\t\tv_kind := 'text';\n"
        "\t\t\texception when others then\n"
        "\t\t\t\tbegin\n"
        "\t\t\t\t\tnew := pg_catalog.jsonb_populate_record(new,"
        " pg_catalog.jsonb_build_object(v_pk, -2000000000 - v_seq));\n"
        "\t\t\t\t\tv_kind := 'number';\n"
        "\t\t\t\texception when others then\n"
        "\t\t\t\t\tperform pg_catalog.set_config('syncbouncer.standin', 'mixed', true);\n"
        "\t\t\t\t\treturn null;\n"
        "\t\t\t\tend;\n"
        "\t\t\tend;\n"
        "\t\tend if;\n"
        "\t\tif tg_op = 'INSERT' then\n"
        "\t\t\t-- which stand-ins the rows got: the pipeline finds the rows PostgreSQL\n"
        "\t\t\t-- turned away (ON CONFLICT DO NOTHING) by them, when all are of one kind\n"
        "\t\t\tperform pg_catalog.set_config('syncbouncer.standin', case coalesce(nullif("
        "pg_catalog.current_setting('syncbouncer.standin', true), ''), v_kind) when v_kind"
        " then v_kind else 'mixed' end, true);\n"
        "\t\tend if;\n"
        "\t\treturn new;\n"
        "\tend if;\n"
        "\tv_seq := coalesce(nullif(pg_catalog.current_setting('syncbouncer.seq', true), ''),"
        " '0')::int + 1;\n"
        "\tperform pg_catalog.set_config('syncbouncer.seq', v_seq::text, true);\n"
        "\tv_xid := pg_catalog.pg_current_xact_id();\n"
        "\tif v_mode = 'capture' then\n"
        "\t\t-- the dropped row is never checked by PostgreSQL: NOT NULL is checked here, before\n"
        "\t\t-- the API sees it (the key may be null: the API assigns it)\n"
        "\t\tif tg_op <> 'DELETE' then\n"
        "\t\t\tselect a.attname into v_conname from pg_catalog.pg_attribute a\n"
        "\t\t\t\twhere a.attrelid = tg_relid and a.attnum > 0 and not a.attisdropped\n"
        "\t\t\t\tand a.attnotnull and a.attname <> v_pk\n"
        "\t\t\t\tand pg_catalog.to_jsonb(new) -> a.attname::text = 'null'::jsonb\n"
        "\t\t\t\torder by a.attnum limit 1;\n"
        "\t\t\tif v_conname is not null then\n"
        "\t\t\t\traise exception using errcode = '23502',\n"
        "\t\t\t\t\tmessage = pg_catalog.format('null value in column \"%s\" of relation"
        " \"%s\" violates not-null constraint', v_conname, tg_table_name),\n"
        "\t\t\t\t\tschema = tg_table_schema, table = tg_table_name, column = v_conname;\n"
        "\t\t\tend if;\n"
        "\t\tend if;\n"
        "\t\tif tg_op = 'INSERT' then\n"
        "\t\t\tv_key := pg_catalog.to_jsonb(new) ->> v_pk;\n"
        "\t\t\tif v_key is not null then\n"
        "\t\t\t\texecute pg_catalog.format('select exists (select from only %I.%I"
        " where %I = ($1).%I)', tg_table_schema, tg_table_name, v_pk, v_pk)\n"
        "\t\t\t\t\tinto v_exists using new;\n"
        "\t\t\t\tif v_exists or exists (select from syncbouncer.capture c\n"
        "\t\t\t\t\t\twhere c.xid = v_xid and c.tbl = tg_relid and c.op = 'I'\n"
        "\t\t\t\t\t\tand c.new ->> v_pk = v_key) then\n"
        "\t\t\t\t\tif pg_catalog.current_setting('syncbouncer.conflict', true) ="
        " 'nothing' then\n"
        "\t\t\t\t\t\treturn null;\n"
        "\t\t\t\t\tend if;\n"
        "\t\t\t\t\tselect conname into v_conname from pg_catalog.pg_constraint\n"
        "\t\t\t\t\t\twhere conrelid = tg_relid and contype = 'p';\n"
        "\t\t\t\t\traise exception using errcode = '23505',\n"
        "\t\t\t\t\t\tmessage = pg_catalog.format('duplicate key value violates unique"
        " constraint \"%s\"', v_conname),\n"
        "\t\t\t\t\t\tdetail = pg_catalog.format('Key (%s)=(%s) already exists.', v_pk,"
        " v_key),\n"
        "\t\t\t\t\t\tschema = tg_table_schema, table = tg_table_name,"
        " constraint = v_conname;\n"
        "\t\t\t\tend if;\n"
        "\t\t\tend if;\n"
        "\t\t\tinsert into syncbouncer.capture (xid, seq, tbl, op, old, new)\n"
        "\t\t\t\tvalues (v_xid, v_seq, tg_relid, 'I', null, pg_catalog.to_jsonb(new));\n"
        "\t\telse\n"
        "\t\t\t-- a write of this row whose outcome at the API is not settled: the row's\n"
        "\t\t\t-- state is unknown until it is (a live writer holds the row lock instead)\n"
        "\t\t\tv_key := pg_catalog.to_jsonb(old) ->> v_pk;\n"
        "\t\t\tv_intent := syncbouncer.intent_blocking(tg_relid, v_key);\n"
        "\t\t\tif v_intent is not null then\n"
        "\t\t\t\traise exception using errcode = '40001',\n"
        "\t\t\t\t\tmessage = pg_catalog.format('row %s of \"%s.%s\" has an earlier write"
        " whose outcome at the API is not settled yet', v_key, tg_table_schema,"
        " tg_table_name),\n"
        "\t\t\t\t\tdetail = pg_catalog.format('Journal entry %s is being settled by"
        " asking the API.', v_intent),\n"
        "\t\t\t\t\thint = 'Retry the statement in a few seconds; SHOW JOURNAL on the"
        " admin console lists unsettled writes.',\n"
        "\t\t\t\t\tschema = tg_table_schema, table = tg_table_name;\n"
        "\t\t\tend if;\n"
        "\t\t\tif tg_op = 'UPDATE' then\n"
        "\t\t\t\tinsert into syncbouncer.capture (xid, seq, tbl, op, old, new)\n"
        "\t\t\t\t\tvalues (v_xid, v_seq, tg_relid, 'U', pg_catalog.to_jsonb(old),"
        " pg_catalog.to_jsonb(new));\n"
        "\t\t\telse\n"
        "\t\t\t\tinsert into syncbouncer.capture (xid, seq, tbl, op, old, new)\n"
        "\t\t\t\t\tvalues (v_xid, v_seq, tg_relid, 'D', pg_catalog.to_jsonb(old), null);\n"
        "\t\t\tend if;\n"
        "\t\tend if;\n"
        "\t\t-- one API request takes so many rows: stop before capturing any more\n"
        "\t\tv_exists := false;\n"
        "\t\tv_key := (coalesce(nullif(pg_catalog.current_setting('syncbouncer.ncaptured', true),"
        " ''), '0')::int + 1)::text;\n"
        "\t\tperform pg_catalog.set_config('syncbouncer.ncaptured', v_key, true);\n"
        "\t\tif v_key::int > coalesce(nullif(pg_catalog.current_setting('syncbouncer.max_rows',"
        " true), '')::int, 2147483647) then\n"
        "\t\t\traise exception using errcode = '54000',\n"
        "\t\t\t\tmessage = 'too many rows for one API request',\n"
        "\t\t\t\tdetail = pg_catalog.format('The statement would %s at least %s rows of"
        " %s.%s; the API takes at most %s in one request.', pg_catalog.lower(tg_op), v_key,"
        " tg_table_schema, tg_table_name,"
        " pg_catalog.current_setting('syncbouncer.max_rows', true)),\n"
        "\t\t\t\thint = 'Split the statement into batches of at most the limit.',\n"
        "\t\t\t\tschema = tg_table_schema, table = tg_table_name;\n"
        "\t\tend if;\n"
        "\t\treturn null;\n"
        "\tend if;\n"
        "\t-- apply\n"
        "\tif tg_op = 'INSERT' then\n"
        "\t\tselect c.fields into v_fields from syncbouncer.confirmed c\n"
        "\t\t\twhere c.xid = v_xid and c.seq = v_seq and c.tbl = tg_relid;\n"
        "\t\tif not found then\n"
        "\t\t\treturn null;\n"
        "\t\tend if;\n"
        "\t\treturn pg_catalog.jsonb_populate_record(new, coalesce(v_fields, '{}'));\n"
        "\tend if;\n"
        "\tv_key := pg_catalog.to_jsonb(old) ->> v_pk;\n"
        "\tselect c.fields into v_fields from syncbouncer.confirmed c\n"
        "\t\twhere c.xid = v_xid and c.tbl = tg_relid and c.key = v_key\n"
        "\t\torder by c.seq limit 1;\n"
        "\tif not found then\n"
        "\t\treturn null;\n"
        "\tend if;\n"
        "\tif tg_op = 'DELETE' then\n"
        "\t\treturn old;\n"
        "\tend if;\n"
        "\treturn pg_catalog.jsonb_populate_record(new, coalesce(v_fields, '{}'));\n"
        "end\n"
        "$guard$;\n"
        "comment on function syncbouncer.guard() is"
        " 'syncbouncer: refuses writes that bypass the proxy; captures and applies its own';\n"
        /*
         * never a downgrade: the recorded version only goes up. Before the version row is
         * written, so that the install that would lower it fails whole. A non-number on either
         * side is let through (an operator's repair).
         */
        "create or replace function syncbouncer.meta_version() returns trigger\n"
        "language plpgsql set search_path = pg_catalog, pg_temp as $f$\n"
        "begin\n"
        "\tif old.key = 'version' and new.key = 'version'"
        " and old.value ~ '^[0-9]{1,9}$' and new.value ~ '^[0-9]{1,9}$'"
        " and new.value::int < old.value::int then\n"
        "\t\traise exception using errcode = '55000',\n"
        "\t\t\tmessage = pg_catalog.format('the syncbouncer schema in database %s is version"
        " %s, newer than this syncbouncer''s %s: upgrade syncbouncer',"
        " pg_catalog.current_database(), old.value, new.value),\n"
        "\t\t\thint = 'syncbouncer never installs an older schema over a newer one. To roll"
        " back, stop every newer syncbouncer first, then delete the version row of"
        " syncbouncer.meta.';\n"
        "\tend if;\n"
        "\treturn new;\n"
        "end\n"
        "$f$;\n"
        "drop trigger if exists syncbouncer_meta_version on syncbouncer.meta;\n"
        "create trigger syncbouncer_meta_version before update on syncbouncer.meta\n"
        "\tfor each row execute function syncbouncer.meta_version();\n"
        "insert into syncbouncer.meta (key, value) values ('version', '" CATALOG_SQL_VERSION "')\n"
        "\ton conflict (key) do update set value = excluded.value;\n";

/*
 * Whether the schema's objects exist: one boolean. to_regclass() keeps the query valid when they
 * do not; only then is catalog_sql_meta asked for the installed version.
 */
static const char catalog_sql_exists[] =
        "select pg_catalog.to_regclass('syncbouncer.meta') is not null"
        " and pg_catalog.to_regprocedure('syncbouncer.guard()') is not null";

/* The installed version: one row, or none. */
static const char catalog_sql_meta[] = "select value from syncbouncer.meta where key = 'version'";

/*
 * Introspection of one table: $1 schema, $2 table. One row per column, in column order:
 * relid, column, type oid, type name, not null, has default, part of the primary key,
 * primary key column count, guard triggers in place (0 to 3), relkind, and the other
 * schemas that hold a relation of the same name (quote_ident()ed, comma-separated: an
 * unqualified name finds that one first when its schema comes first in a search_path).
 * No row: no such table (or not visible to this user).
 */
static const char catalog_sql_columns[] =
        "select c.oid::int8, a.attname, a.atttypid::int8,"
        " pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,"
        " a.atthasdef or a.attidentity <> '' or a.attgenerated <> '',"
        " coalesce(a.attnum = any (p.conkey), false),"
        " coalesce(pg_catalog.cardinality(p.conkey), 0),"
        " (select count(*) from pg_catalog.pg_trigger t"
        " where t.tgrelid = c.oid and t.tgenabled = 'A'"
        " and ((t.tgfoid = pg_catalog.to_regprocedure('syncbouncer.guard()')"
        " and ((t.tgname = 'syncbouncer_guard' and t.tgtype = 31)"
        " or (t.tgname = 'syncbouncer_guard_truncate' and t.tgtype = 34))"
        " and t.tgnargs = 1 and t.tgargs = pg_catalog.convert_to(pk.attname, 'UTF8') || '\\x00'::bytea)"
        " or (t.tgfoid = pg_catalog.to_regprocedure('syncbouncer.applied()')"
        " and t.tgname = 'syncbouncer_guard_applied' and t.tgtype = 29))),"
        " c.relkind::text,"
        " (select pg_catalog.string_agg(pg_catalog.quote_ident(n2.nspname), ',')"
        " from pg_catalog.pg_class c2"
        " join pg_catalog.pg_namespace n2 on n2.oid = c2.relnamespace"
        " where c2.relname = c.relname and c2.oid <> c.oid"
        " and c2.relkind in ('r', 'p', 'v', 'm', 'f'))"
        " from pg_catalog.pg_class c"
        " join pg_catalog.pg_namespace n on n.oid = c.relnamespace"
        " join pg_catalog.pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped"
        " left join pg_catalog.pg_constraint p on p.conrelid = c.oid and p.contype = 'p'"
        " left join pg_catalog.pg_attribute pk on pk.attrelid = c.oid"
        " and pk.attnum = p.conkey[1] and pg_catalog.cardinality(p.conkey) = 1"
        " where n.nspname = $1 and c.relname = $2"
        " order by a.attnum";

/*
 * The guard triggers of one table, after the schema: a printf format taking the quoted table name
 * (%1$s) and the primary key column as a quoted literal (%2$s). A lock_timeout keeps a busy table
 * from holding up installation (and everyone queued behind its lock) for long. The table's lock
 * (the one DROP TRIGGER takes anyway) comes first: two poolers installing at once then run one
 * after the other, and the second's DROP ... IF EXISTS sees the first's triggers (looked up
 * under DROP's own weaker first lock, both would find none, and the second CREATE would fail). ENABLE ALWAYS:
 * the guard fires even with session_replication_role = replica. The third trigger counts the
 * rows an apply run wrote; its WHEN keeps it out of the after-trigger queue in every other mode.
 */
#define CATALOG_SQL_TRIGGERS_FMT                                                                   \
	"select pg_catalog.set_config('lock_timeout', '5s', true);\n"                              \
	"lock table %1$s in access exclusive mode;\n"                                               \
	"drop trigger if exists syncbouncer_guard on %1$s;\n"                                      \
	"create trigger syncbouncer_guard before insert or update or delete on %1$s\n"             \
	"\tfor each row execute function syncbouncer.guard(%2$s);\n"                               \
	"drop trigger if exists syncbouncer_guard_truncate on %1$s;\n"                             \
	"create trigger syncbouncer_guard_truncate before truncate on %1$s\n"                      \
	"\tfor each statement execute function syncbouncer.guard(%2$s);\n"                        \
	"drop trigger if exists syncbouncer_guard_applied on %1$s;\n"                              \
	"create trigger syncbouncer_guard_applied after insert or update or delete on %1$s\n"     \
	"\tfor each row when (pg_catalog.current_setting('syncbouncer.mode', true) = 'apply')\n"  \
	"\texecute function syncbouncer.applied();\n"                                              \
	"alter table %1$s enable always trigger syncbouncer_guard;\n"                              \
	"alter table %1$s enable always trigger syncbouncer_guard_truncate;\n"                     \
	"alter table %1$s enable always trigger syncbouncer_guard_applied;\n"

#endif

/*
 * userlist — pgbouncer's auth_file ("userlist.txt"): one user per line,
 *     "user" "password" [anything else]
 * where a doubled "" inside a field is one quote, and the password is plain text, an MD5 hash
 * ("md5" + 32 hex digits) or a SCRAM secret
 * ("SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>"). Blank lines and lines starting with ';'
 * or '#' are comments.
 *
 * Invariants: a loaded userlist is immutable; names are unique (a later line for the same user
 * replaced the earlier one); lookups are O(log n). Bad lines are warned about (file:line, never
 * the password) and skipped; only an unreadable file fails the load.
 */
#ifndef SB_USERLIST_H
#define SB_USERLIST_H

#include <stdbool.h>
#include <stddef.h>

#define USERLIST_MAX_FILE_SIZE (64 * 1024 * 1024)
#define USERLIST_MAX_LINE      (64 * 1024)

struct userlist;

enum userlist_pw_kind {
	USERLIST_PW_PLAIN,
	USERLIST_PW_MD5,
	USERLIST_PW_SCRAM,
};
const char *userlist_pw_kind_str(enum userlist_pw_kind kind);
/* What a stored password is, by PostgreSQL's rules ("md5" + 32 hex, a valid SCRAM secret, else
 * plain). */
enum userlist_pw_kind userlist_password_kind(const char *password);

/* Reads path; NULL (and a logged error) when it cannot be read or memory runs out. Caller owns it.
 */
struct userlist *userlist_load(const char *path);
/* Same from memory; name is used in messages. */
struct userlist *userlist_load_buffer(const char *text, size_t len, const char *name);
/* The stored password of user, or NULL when unknown. Borrowed from ul; NULL ul is fine. */
const char *userlist_get_password(const struct userlist *ul, const char *user);
int userlist_count(const struct userlist *ul);
/* The name of the i-th user (0 <= i < userlist_count()), borrowed from ul. */
const char *userlist_name(const struct userlist *ul, int i);
/* How many lines were warned about and skipped. */
int userlist_skipped(const struct userlist *ul);
/*
 * Another holder of ul (being immutable, one list serves every worker that loaded nothing
 * itself); returns ul. Each holder lets go with userlist_free(), which frees the list once the
 * last one has.
 */
struct userlist *userlist_ref(struct userlist *ul);
void userlist_free(struct userlist *ul);

#endif

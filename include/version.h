/* version — the one version string: `syncbouncer -V` and SHOW VERSION print the same line. */
#ifndef SB_VERSION_H
#define SB_VERSION_H

#ifndef PACKAGE_VERSION
#error "PACKAGE_VERSION comes from configure"
#endif

#define SB_NAME		"syncbouncer"
#define SB_VERSION_LINE SB_NAME " " PACKAGE_VERSION

#endif

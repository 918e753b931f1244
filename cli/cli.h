/* The jaxport command: one function per verb. */
#ifndef JP_CLI_H
#define JP_CLI_H

#include <stdio.h>

#include "jaxport.h"

/* Each verb gets argv starting at its own name and returns the exit status:
 * 0 success, 1 the job failed (bad input file, unmatched leaves), 2 usage. */
int cmd_inspect(int argc, char **argv);
int cmd_match(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_align(int argc, char **argv);
int cmd_diff(int argc, char **argv);

/* Print "jaxport: <message>" for a failed call; returns 1. */
int cli_fail(const jp_err *err);

#endif

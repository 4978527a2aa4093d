/*
 * tap: the Test Anything Protocol for the C unit tests in spec/c/. Each
 * test program includes it once: tap() prints "ok N - ..." or
 * "not ok N - ...", tap_done() prints the plan and gives the exit status
 * (1 when any check failed). check() is tap() unless the program defines
 * TAP_NO_CHECK (a unit under test has its own check). Header-only, for
 * test programs only.
 */
#ifndef SMTPGW_SPEC_TAP_H
#define SMTPGW_SPEC_TAP_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>

static int t_num;
static int t_failed;

__attribute__((format(printf, 2, 3), unused)) static void
tap(bool cond, const char *fmt, ...)
{
	va_list ap;

	t_num++;
	if (!cond)
		t_failed++;
	printf("%sok %d - ", cond ? "" : "not ", t_num);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

__attribute__((unused)) static int tap_done(void)
{
	printf("1..%d\n", t_num);
	return t_failed ? 1 : 0;
}

#ifndef TAP_NO_CHECK
#define check tap
#endif

#endif

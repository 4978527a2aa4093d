/*
 * master: the process `smtpgw -c FILE` starts. It checks the whole
 * configuration, locks and recovers the spool once, makes the Default
 * Cert, binds every listen address, then forks the inbound workers and
 * the queue manager, restarts them when they die, relays signals and
 * reloads by replacing them. It never speaks SMTP and never delivers.
 */
#ifndef SMTPGW_MASTER_H
#define SMTPGW_MASTER_H

/* Returns the process's exit status. */
int master_run(const char *config_path);

#endif

/*
 * queue_command: `smtpgw -c FILE queue ...`, the spool for a person, in
 * the manner of Postfix's mailq, postqueue and postsuper (see
 * queue_command.c).
 */
#ifndef SMTPGW_QUEUE_COMMAND_H
#define SMTPGW_QUEUE_COMMAND_H

struct config;

/* argv: the words after "queue". Exit status: 0, or 1 when a message
 * named was not found (the others are still done) or usage is wrong. */
int queue_command(const struct config *cfg, int argc, char **argv);

#endif

/*
 * lmp_alarm.h -- the soft deadline of a Pool task, inside its worker
 * (lmp_alarm.c).
 */
#ifndef LMP_ALARM_H
#define LMP_ALARM_H

#include "lmp_internal.h"

/* Adds soft_deadline() to the core table at the top of the stack. */
void lmp__alarm_open(lua_State *L);

#endif /* LMP_ALARM_H */

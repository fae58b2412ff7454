/*
 * conform.pml -- a deterministic harness over board_sm.pml for the conformance test.
 *
 * tests/test_proofs_conformance.py writes `conform_cmds.pml` (an inline `commands()` made of
 * STEP(...) lines), runs this file in SPIN's simulator (`spin conform.pml`, no compilation) and
 * compares each printed step with what the real consensus.state.apply produced for the same
 * Proposal. One replica, no concurrency: the harness exercises exactly the transition relation
 * (sm_apply) that leases.pml and sessions.pml explore exhaustively.
 *
 * Printed after each step (all numbers; the test renders the real BoardState the same way):
 *   R code note rev aux lease          the Result
 *   G revision applied next_lease next_session fence_counter
 *   L id owner refreshes keybits       every live lease
 *   K key version lease                every live key
 *   C key owner fence lease            every claim
 *   S id agent floor last_active       every live session
 *   Q id seq code note rev aux lease   every cached session result
 *   E                                  end of step
 */

#ifndef NK
#define NK 2
#endif
#ifndef NL
#define NL 10
#endif
#ifndef NS
#define NS 8
#endif
#ifndef NQ
#define NQ 8
#endif
#ifndef SMAX
#define SMAX 2
#endif
#ifndef RMAX
#define RMAX 3
#endif
#define NREP 1

#include "board_sm.pml"

#define b brd[0]
hidden byte pi;
hidden byte pj;

inline dump() {
  printf("R %d %d %d %d %d\n", res.code, res.note, res.rev, res.aux, res.lease);
  printf("G %d %d %d %d %d\n", b.revision, b.applied, b.next_lease, b.next_session,
         b.fence_counter);
  pi = 0;
  do
  :: pi < NL ->
       if
       :: b.l_live[pi] -> printf("L %d %d %d %d\n", pi, b.l_owner[pi], b.l_ref[pi], b.l_keys[pi])
       :: else -> skip
       fi;
       pi++
  :: else -> break
  od;
  pi = 0;
  do
  :: pi < NK ->
       if
       :: b.kv_live[pi] -> printf("K %d %d %d\n", pi, b.kv_ver[pi], b.kv_lease[pi])
       :: else -> skip
       fi;
       if
       :: b.c_owner[pi] != 0 ->
            printf("C %d %d %d %d\n", pi, b.c_owner[pi], b.c_fence[pi], b.c_lease[pi])
       :: else -> skip
       fi;
       pi++
  :: else -> break
  od;
  pi = 0;
  do
  :: pi < NS ->
       if
       :: b.s_live[pi] ->
            printf("S %d %d %d %d\n", pi, b.s_agent[pi], b.s_floor[pi], b.s_last[pi]);
            pj = 0;
            do
            :: pj < NQ ->
                 if
                 :: b.r_has[pi * NQ + pj] ->
                      printf("Q %d %d %d %d %d %d %d\n", pi, pj, b.r[pi * NQ + pj].code,
                             b.r[pi * NQ + pj].note, b.r[pi * NQ + pj].rev,
                             b.r[pi * NQ + pj].aux, b.r[pi * NQ + pj].lease)
                 :: else -> skip
                 fi;
                 pj++
            :: else -> break
            od
       :: else -> skip
       fi;
       pi++
  :: else -> break
  od;
  printf("E\n")
}

/* one proposal: fields as in typedef Cmd (board_sm.pml) */
#define STEP(o, a, k, fk, ff, ls, ex, rf, se, sq, ak) \
  d_step { \
    sm_r = 0; \
    C.op = o; C.agent = a; C.key = k; C.fkey = fk; C.ffence = ff; C.lease = ls; \
    C.expect = ex; C.refs = rf; C.sess = se; C.seq = sq; C.acked = ak; C.obs = 0; \
    sm_apply() \
  }; \
  dump()

#include "conform_cmds.pml"

init {
  b.next_lease = 1;
  b.next_session = 1;
  commands();
  printf("DONE\n")
}

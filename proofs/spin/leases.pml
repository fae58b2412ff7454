/*
 * leases.pml -- leases whose expiry enters through the log, claims and fencing tokens.
 *
 * The replicated state machine is board_sm.pml (the transcription of consensus/core/state.py that the
 * conformance test checks against the real apply). Around it, this file models:
 *
 *   * the log          one committed sequence `log[]` (Raft's agreement on it is raft.pml's job);
 *                      NREP = 2 replicas each apply its prefix at their own pace (brd[r].applied
 *                      is the index r applied), so replicas are at different indexes at once.
 *   * the network      a bag of proposals on their way to the log (agents' commands, and
 *                      ExpireLease from whichever replica believes it leads). Any proposal may be
 *                      committed in any order (reordering), copied (DUPS duplicates), or never
 *                      committed at all (loss: for safety, a message never delivered is a lost
 *                      one). A proposal committed after a leader change is "an old leader's
 *                      proposal arriving late" (Raft may commit a deposed leader's entry).
 *                      Replies: when the leader applies an agent's claim or put, the reply
 *                      reaches the agent (a lost reply needs no extra action: an agent may
 *                      always choose not to act on what it knows). Reordered / duplicated
 *                      replies are not modelled separately: they can only make an agent hold a
 *                      token it was issued earlier, and an agent that lost the newer reply holds
 *                      the same token -- the proposals it can send are the same set.
 *   * the leader clock consensus/core/leases.py LeaseTimers.due + replica.py lease_tick: a replica that
 *                      believes it leads may, at any moment (time is not modelled, so every
 *                      timing of the TTL is explored), propose ExpireLease(lease, refreshes) for a
 *                      lease live in ITS applied state, with the refresh count it sees there.
 *                      (LeaseTimers starts a countdown when it first sees a count and proposes when
 *                      the deadline passed with the count unchanged; the proposal carries that
 *                      same count, so the moment of proposing stands for both.) The ghost `obs`
 *                      is the proposer's applied index at that moment.
 *   * leader change    LCS times the leadership moves. The new leader restarts its countdowns
 *                      (on_role_change -> LeaseTimers.reset: a liveness matter, TTL is a minimum);
 *                      the old leader keeps believing it leads, and its timer keeps firing, until
 *                      it steps down at a moment of SPIN's choosing.
 *   * agents           NA = 2 agents; each proposes one claim of key 0, then (a budget of A1OPS /
 *                      A2OPS) keepalives of the lease its claim reply named and fenced puts to
 *                      key 0 with the version they
 *                      last saw (TWO_KEYS: also a put to key 1 carrying key 0's fence -- "a write
 *                      to any key"). Beliefs come only from replies.
 *
 * Properties, asserted at every applied index of every replica:
 *   P1 one holder: the claim on key 0 after index i (owner, fence) is the same on every replica
 *      that applied i (recorded by the first one), and a claim's lease is live and its owner's.
 *   P2 fences strictly increase: each new claim's fence exceeds every fence that replica issued.
 *   P3 no stale write: a fenced put/delete that passes carries the fence of the fence key's
 *      current claim.
 *   P4 a keepalive that commits first wins: an ExpireLease that ends a lease was proposed by a
 *      replica that had applied the lease's last keepalive (so the TTL it counted down started
 *      after the last refresh: a TTL is a minimum).
 *
 * Negative controls (macros; SPIN must find a counterexample):
 *   BUG_LOCAL_EXPIRY      a replica (a follower too) expires a lease by its own clock, applying
 *                         _end_lease to its own state instead of proposing through the log -> P1
 *   BUG_NO_REFRESH_GUARD  ExpireLease ignores refreshes_seen (board_sm.pml)      -> P4 fails
 *   BUG_FENCE_LE          _check_fences accepts fence <= current (board_sm.pml)  -> P3 fails
 *   BUG_CLAIM_NO_BUMP     a claim reuses the fence counter (board_sm.pml)        -> P2 fails
 *
 * Bounds: the #define block below (LARGE: the --large bound).
 */

#define NREP 2
#define NA 2
#ifdef TWO_KEYS
#define NK 2
#else
#define NK 1
#endif
#define NS 1
#define NQ 1
#define SMAX 1
#define RMAX 1
#define SM_NO_SESSIONS

#ifdef LARGE
#define LOGMAX 6
#define A1OPS 2
#define A2OPS 1
#define LCS 2
#define BAG 3
#define EXPS 2
#endif
#ifndef LOGMAX
#define LOGMAX 4      /* committed entries                               */
#endif
#ifndef A1OPS
#define A1OPS 2       /* keepalives/puts agent 1 may send, after its claim */
#endif
#ifndef A2OPS
#define A2OPS 0       /* keepalives/puts agent 2 may send, after its claim */
#endif
#ifndef LCS
#define LCS 1         /* leadership changes                              */
#endif
#ifndef BAG
#define BAG 2         /* proposals in flight at once                     */
#endif
#ifndef EXPS
#define EXPS 1        /* ExpireLease proposals, all replicas together    */
#endif
#ifndef DUPS
#define DUPS 1        /* duplicated proposals                            */
#endif
#define NL (NA + DUPS + 1)   /* lease ids: one per claim applied (one claim per agent + copies) */

/* ghost hooks into board_sm.pml (B = the applying replica's board, C = the command) */
#define HOOK_CLAIMED(k) \
  assert(B.c_fence[k] > g_maxfence[sm_r]); g_maxfence[sm_r] = B.c_fence[k]
#define HOOK_FENCED_WRITE() \
  assert(B.c_owner[C.fkey] != 0 && B.c_fence[C.fkey] == C.ffence)
#define HOOK_KEEPALIVE() \
  g_lastka[sm_r * NL + C.lease] = B.applied
#define HOOK_EXPIRED() \
  assert(g_lastka[sm_r * NL + C.lease] <= C.obs)

byte g_maxfence[NREP];        /* P2: largest fence issued, per replica            */
byte g_lastka[NREP * NL];     /* P4: index of the lease's last applied keepalive  */

#include "board_sm.pml"

Cmd  log[LOGMAX];
byte loglen;
Cmd  bag[BAG];                /* op == 0: free slot */
byte nbag;                    /* slots in use */

/* P1: the claim on key 0 after index i, as the first replica to apply i saw it */
bool g_rec[LOGMAX + 1];
byte g_owner[LOGMAX + 1];
byte g_fence[LOGMAX + 1];

byte leader;                  /* who leads now */
bool believes[NREP];          /* who believes it leads (and runs its lease clock) */

/* agents' beliefs, from replies only */
byte a_fence[NA + 1];
byte a_lease[NA + 1];
byte a_ver[NA + 1];
byte a_ops[NA + 1];
bool a_claimed[NA + 1];       /* each agent proposes one claim of key 0 */
byte exps = EXPS;
byte lcs = LCS;
byte dups = DUPS;

byte fs;                      /* scratch: a free slot (zeroed after use; not `hidden`, since
                               * pan undoes `bag[fs] = ..` with the current fs) */

inline free_slot() {          /* first free bag slot -> fs (the caller checked nbag < BAG) */
  fs = 0;
  do
  :: fs < BAG && bag[fs].op != 0 -> fs++
  :: else -> break
  od
}

inline send(o, a, k, fk, ff, ls, ex, rf, ob) {
  bag[fs].op = o; bag[fs].agent = a; bag[fs].key = k; bag[fs].fkey = fk; bag[fs].ffence = ff;
  bag[fs].lease = ls; bag[fs].expect = ex; bag[fs].refs = rf; bag[fs].obs = ob;
  nbag++; fs = 0
}

inline clear_cmd(m) {
  m.op = 0; m.agent = 0; m.key = 0; m.fkey = 0; m.ffence = 0; m.lease = 0; m.expect = 0;
  m.refs = 0; m.obs = 0
}

inline copy_cmd(dst, src) {
  dst.op = src.op; dst.agent = src.agent; dst.key = src.key; dst.fkey = src.fkey;
  dst.ffence = src.ffence; dst.lease = src.lease; dst.expect = src.expect; dst.refs = src.refs;
  dst.sess = src.sess; dst.seq = src.seq; dst.acked = src.acked; dst.obs = src.obs
}

/* Replica r applies its next committed entry (state._apply), then P1 at that index; if r leads
 * the proposing agent gets the reply. (A lost reply needs no action of its own: an agent that
 * never learns its fence behaves like one that learnt it and chose not to use it.) */
inline apply_next(r) {
  d_step {
    sm_r = r;
    copy_cmd(C, log[B.applied]);
    sm_apply();
    printf("replica %d applies #%d: op %d agent %d key %d fence %d lease %d refreshes %d -> code %d note %d aux %d; holder %d fence %d\n",
           r, B.applied, C.op, C.agent, C.key, C.ffence, C.lease, C.refs, res.code, res.note, res.aux,
           B.c_owner[0], B.c_fence[0]);
    /* P1 */
    if
    :: B.c_owner[0] != 0 ->
         assert(B.l_live[B.c_lease[0]] && B.l_owner[B.c_lease[0]] == B.c_owner[0])
    :: else -> skip
    fi;
    if
    :: !g_rec[B.applied] ->
         g_rec[B.applied] = 1; g_owner[B.applied] = B.c_owner[0]; g_fence[B.applied] = B.c_fence[0]
    :: else ->
         assert(g_owner[B.applied] == B.c_owner[0] && g_fence[B.applied] == B.c_fence[0])
    fi;
    /* the reply: what an agent acts on is a claim's fence and lease, and a put's version */
    if
    ::  r == leader && res.code == C_OK && C.op == OP_CLAIM ->
         a_fence[C.agent] = res.aux; a_lease[C.agent] = res.lease;
         if
         :: res.note == N_NONE -> a_ver[C.agent] = 1       /* a new claim wrote version 1 */
         :: else -> skip
         fi
    ::  r == leader && res.code == C_OK && C.op == OP_PUT && C.key == 0 ->
         a_ver[C.agent] = res.aux
    :: else -> skip
    fi
  }
}

inline agent_step(a) {      /* the caller checked a_ops[a] > 0 && nbag < BAG */
  free_slot();
  if
  :: a_lease[a] != 0 -> send(OP_KA, a, 0, NONE, 0, a_lease[a], NONE, 0, 0)   /* keepalive */
  :: a_fence[a] != 0 -> send(OP_PUT, a, 0, 0, a_fence[a], 0, a_ver[a], 0, 0) /* fenced put */
#ifdef TWO_KEYS
  :: a_fence[a] != 0 -> send(OP_PUT, a, 1, 0, a_fence[a], 0, NONE, 0, 0)     /* another key */
#endif
  fi;
  a_ops[a]--
}

init {
  byte i;
  byte r;
  d_step {
    brd[0].next_lease = 1; brd[0].next_session = 1;
    brd[1].next_lease = 1; brd[1].next_session = 1;
    leader = 0; believes[0] = 1;
    a_ops[1] = A1OPS; a_ops[2] = A2OPS
  };
  /* Each action is one atomic step; a choice (select) whose guard turns out false is a no-op,
   * and the choice variables are zeroed at the end, so they never split states. */
end:
  do
  /* --- agents send proposals */
  :: atomic { !a_claimed[1] && nbag < BAG -> free_slot(); send(OP_CLAIM, 1, 0, NONE, 0, 0, NONE, 0, 0); a_claimed[1] = 1 }
  :: atomic { !a_claimed[2] && nbag < BAG -> free_slot(); send(OP_CLAIM, 2, 0, NONE, 0, 0, NONE, 0, 0); a_claimed[2] = 1 }
  :: atomic { a_ops[1] > 0 && nbag < BAG && (a_lease[1] != 0 || a_fence[1] != 0) -> agent_step(1) }
  :: atomic { a_ops[2] > 0 && nbag < BAG && (a_lease[2] != 0 || a_fence[2] != 0) -> agent_step(2) }
  /* --- the network: a proposal is committed (appended to the log) or duplicated */
  :: atomic {
       select(i : 0 .. BAG - 1);
       if
       :: bag[i].op != 0 && loglen < LOGMAX ->
            copy_cmd(log[loglen], bag[i]); loglen++; clear_cmd(bag[i]); nbag--
       :: else -> skip
       fi;
       i = 0
     }
  :: atomic {
       select(i : 0 .. BAG - 1);
       if
       :: bag[i].op != 0 && dups > 0 && nbag < BAG ->
            free_slot(); copy_cmd(bag[fs], bag[i]); dups--; nbag++; fs = 0
       :: else -> skip
       fi;
       i = 0
     }
  /* --- a replica applies its next committed entry (the leader's reply heard or lost) */
  :: atomic {
       select(r : 0 .. NREP - 1);
       if
       :: brd[r].applied < loglen -> apply_next(r)
       :: else -> skip
       fi;
       r = 0
     }
  /* --- the lease clock of a replica that believes it leads: ExpireLease(lease, refreshes) */
  :: atomic {
       select(r : 0 .. NREP - 1);
       select(i : 1 .. NL - 1);
       if
       :: believes[r] && exps > 0 && nbag < BAG && brd[r].l_live[i] ->
            free_slot();
            printf("replica %d (believes it leads) proposes ExpireLease(%d, refreshes %d) at applied #%d\n",
                   r, i, brd[r].l_ref[i], brd[r].applied);
            send(OP_EXPIRE, 0, 0, NONE, 0, i, NONE, brd[r].l_ref[i], brd[r].applied);
            exps--
       :: else -> skip
       fi;
       i = 0; r = 0
     }
#ifdef BUG_LOCAL_EXPIRY
  /* planted: a replica (a follower too) ends the lease in its own state, outside the log */
  :: atomic {
       select(r : 0 .. NREP - 1);
       select(i : 1 .. NL - 1);
       if
       :: exps > 0 && brd[r].l_live[i] ->
            d_step { sm_r = r; sm_end_lease(i, N_EXPIRED) };
            printf("replica %d expires lease %d locally (BUG_LOCAL_EXPIRY)\n", r, i);
            exps--
       :: else -> skip
       fi;
       i = 0; r = 0
     }
#endif
  /* --- leadership moves; the old leader still believes it leads (its clock still fires) */
  :: atomic {
       lcs > 0 -> leader = 1 - leader; believes[leader] = 1; lcs--;
       printf("leader is now replica %d\n", leader)
     }
  /* --- the deposed leader learns it and stops its clock */
  :: atomic { believes[1 - leader] -> believes[1 - leader] = 0 }
  od
}

/*
 * board_sm.pml -- the replicated state machine of consensus/core/state.py, transcribed for SPIN.
 *
 * Shared by leases.pml, sessions.pml (the exhaustive models) and conform.pml (the deterministic
 * harness that tests/test_proofs_conformance.py runs against the real consensus.state.apply), so
 * the text the model checker explores is the text the conformance test compares with the code.
 *
 * What is transcribed (one Promela block per Python function, same order of checks):
 *   sm_apply      <- state._apply          (applied += 1, session lookup, dedup, floor, cache)
 *   sm_open       <- state._open_session   (new id, LRU eviction past sessions_max)
 *   sm_dispatch   <- state._dispatch       (put/delete/claim/grant/keepalive/revoke/expire/close)
 *   sm_fences     <- state._check_fences
 *   sm_write      <- state._write          (revision += 1, move the key between leases)
 *   sm_remove     <- state._remove         (drop the key, detach it, drop its claim)
 *   sm_end_lease  <- state._end_lease      (revoke / expire: claims released, keys deleted)
 *   policy        <- policies.reject_stale (the default policy: CAS on expect_version)
 *
 * What is abstracted (stated, not hidden): values (a write's value is irrelevant to every
 * property here; versions are kept), authors, TTLs (time enters only as ExpireLease, exactly as
 * in the code), policy bindings other than the default, the audit/event logs, and the quotas
 * keys_max / leases_max / keys_per_lease_max (the models stay far below them; the generators of
 * the conformance test too). sessions_max and results_per_session_max ARE modelled (SMAX, RMAX).
 *
 * Encoding: agents 1..NA (0 = nobody), keys 0..NK-1, lease ids 1..NL-1 (0 = no lease), session
 * ids 1..NS-1 (0 = no session), seq 0..NQ-1, NONE (255) = "field not given".
 * A client must define NREP, NK, NL, NS, NQ, SMAX, RMAX before including this file, and may
 * define the hook macros (HOOK_*) to attach ghost checks; they default to nothing.
 *
 * SM_NO_SESSIONS / SM_NO_LEASES compile out the session table / the lease, claim and delete
 * commands for a model that never proposes them (pan.c, and its compile time, shrink).
 *
 * Planted bugs (negative controls), off unless defined:
 *   BUG_NO_REFRESH_GUARD  ExpireLease ignores refreshes_seen (an expiry racing a keepalive wins)
 *   BUG_FENCE_LE          _check_fences accepts fence <= current instead of == current
 *   BUG_FORGET            the session table keeps only the latest result per session (Raft
 *                         dissertation 6.3's one-outstanding-request simplification), forgetting
 *                         the result of an earlier seq whose outcome the client does not know
 *   BUG_CLAIM_NO_BUMP     (conformance planted divergence only) claim does not bump the fence
 */

#define NONE 255

/* result codes: ErrorCode in consensus/core/model.py, plus OK */
#define C_OK          0
#define C_CLAIM_HELD  1
#define C_FENCED_OUT  2
#define C_NOT_FOUND   3
#define C_INVALID     4
#define C_POLICY      5   /* policy_rejected */
#define C_STALE       6   /* stale_version   */
#define C_EXPIRED     7   /* session_expired */

/* result notes (Result.note) */
#define N_NONE     0
#define N_HELD     1   /* "already held by this agent" */
#define N_GONE     2   /* "lease refreshed or gone"    */
#define N_EXPIRED  3   /* "lease-expired"              */
#define N_REVOKED  4   /* "revoked"                    */
#define N_CLOSED   5   /* "closed"                     */

/* ops (Command.op) */
#define OP_OPEN    1
#define OP_CLOSE   2
#define OP_PUT     3
#define OP_DEL     4
#define OP_CLAIM   5
#define OP_GRANT   6
#define OP_KA      7
#define OP_REVOKE  8
#define OP_EXPIRE  9

#ifndef HOOK_DISPATCHED
#define HOOK_DISPATCHED() skip        /* a command reached _dispatch (not served from the cache) */
#endif
#ifndef HOOK_CLAIMED
#define HOOK_CLAIMED(k) skip        /* a new claim on key k was granted */
#endif
#ifndef HOOK_FENCED_WRITE
#define HOOK_FENCED_WRITE() skip      /* a put/delete carrying a fence passed every check */
#endif
#ifndef HOOK_EXPIRED
#define HOOK_EXPIRED() skip           /* an ExpireLease ended its lease */
#endif
#ifndef HOOK_KEEPALIVE
#define HOOK_KEEPALIVE() skip         /* a keepalive bumped a lease's refresh count */
#endif

/* One proposal: consensus.model.Proposal with its command flattened. */
typedef Cmd {
  byte op;
  byte agent;
  byte key;      /* put/delete/claim target                                   */
  byte fkey;     /* FenceRef.key  (NONE: no fence)                            */
  byte ffence;   /* FenceRef.fence                                            */
  byte lease;    /* put: PutCmd.lease (0: none); keepalive/revoke/expire: id  */
  byte expect;   /* expect_version (NONE: not given)                          */
  byte refs;     /* ExpireLease.refreshes                                     */
  byte sess;     /* Proposal.session (0: none)                                */
  byte seq;      /* Proposal.seq                                              */
  byte acked;    /* Proposal.acked_below                                      */
  byte obs;      /* ghost, not in the code: proposer's applied index when its countdown started */
};

/* consensus.model.Result, reduced to what the properties and the conformance test compare. */
typedef Res {
  byte code;
  byte note;
  byte rev;      /* Result.revision                                       */
  byte aux;      /* claim: fence; put/delete: version; keepalive: refreshes; open: session id */
  byte lease;    /* claim/grant/keepalive/revoke/expire: lease id         */
};

/* BoardState (one per replica) */
typedef Board {
  byte revision;
  byte applied;
  byte next_lease;
  byte next_session;
  byte fence_counter;
  /* leases: _Lease(id, owner, keys, refreshes); keys as a bit set over key indexes */
  bool l_live[NL];
  byte l_owner[NL];
  byte l_ref[NL];
  byte l_keys[NL];
  /* kv: _KV(version, lease) */
  bool kv_live[NK];
  byte kv_ver[NK];
  byte kv_lease[NK];
  /* claims: _Claim(owner, fence, lease); owner 0 = no claim */
  byte c_owner[NK];
  byte c_fence[NK];
  byte c_lease[NK];
  /* sessions: _Session(agent, results, floor, last_active) */
  bool s_live[NS];
  byte s_agent[NS];
  byte s_floor[NS];
  byte s_last[NS];
  bool r_has[NS * NQ];   /* results[seq] present, indexed sess*NQ+seq */
  Res  r[NS * NQ];
};

Board brd[NREP];
hidden byte sm_r;        /* which replica's board the inlines act on: B is brd[sm_r] */
#define B brd[sm_r]
hidden Cmd sm_c;         /* the proposal being applied: the caller copies it here (sm_load) */
#define C sm_c

/* Scratch for the inlines. `hidden` keeps them out of the state vector: they are only ever
 * live inside one d_step, which is how every model calls sm_apply. */
hidden byte sm_i;
hidden byte sm_k;
hidden byte sm_j;
hidden byte sm_l;
hidden byte sm_n;
hidden byte sm_keys;
hidden byte sm_have;
hidden byte sm_go;
hidden byte sm_cache;
hidden Res  res;         /* the Result of the last sm_apply */

/* forget results[idx] (zeroed so equal tables are equal states) */
inline sm_forget(idx) {
  B.r_has[idx] = 0;
  B.r[idx].code = 0; B.r[idx].note = 0; B.r[idx].rev = 0; B.r[idx].aux = 0; B.r[idx].lease = 0
}

inline sm_res(cd, nt, ax, ls) {
  res.code = cd; res.note = nt; res.rev = B.revision; res.aux = ax; res.lease = ls
}

/* state._remove: the caller bumped the revision. */
inline sm_remove(k) {
  if
  :: B.kv_lease[k] != 0 && B.l_live[B.kv_lease[k]] ->
       B.l_keys[B.kv_lease[k]] = B.l_keys[B.kv_lease[k]] & (255 - (1 << (k)))
  :: else -> skip
  fi;
  B.kv_live[k] = 0; B.kv_ver[k] = 0; B.kv_lease[k] = 0;
  B.c_owner[k] = 0; B.c_fence[k] = 0; B.c_lease[k] = 0
}

/* state._write(key, lease): new version at a new revision; the key moves to `ls`. */
inline sm_write(k, ls) {
  B.revision++;
  if
  :: B.kv_live[k] && B.kv_lease[k] != 0 && B.kv_lease[k] != ls && B.l_live[B.kv_lease[k]] ->
       B.l_keys[B.kv_lease[k]] = B.l_keys[B.kv_lease[k]] & (255 - (1 << (k)))
  :: else -> skip
  fi;
  if
  :: B.kv_live[k] -> B.kv_ver[k]++
  :: else -> B.kv_ver[k] = 1
  fi;
  B.kv_live[k] = 1;
  B.kv_lease[k] = ls;
  if
  :: ls != 0 -> B.l_keys[ls] = B.l_keys[ls] | (1 << (k))
  :: else -> skip
  fi
}

/* state._end_lease(rec, cause): delete the lease, release claims not on its keys, then delete
 * its keys in one revision (each _remove releases that key's claim). */
inline sm_end_lease(ls, nt) {
  sm_keys = B.l_keys[ls];
  B.l_live[ls] = 0; B.l_owner[ls] = 0; B.l_ref[ls] = 0; B.l_keys[ls] = 0;
  sm_i = 0;
  do
  :: sm_i < NK ->
       if
       :: B.c_owner[sm_i] != 0 && B.c_lease[sm_i] == ls && (sm_keys & (1 << sm_i)) == 0 ->
            B.c_owner[sm_i] = 0; B.c_fence[sm_i] = 0; B.c_lease[sm_i] = 0
       :: else -> skip
       fi;
       sm_i++
  :: else -> break
  od;
  if
  :: sm_keys != 0 ->
       B.revision++;
       sm_i = 0;
       do
       :: sm_i < NK ->
            if
            :: (sm_keys & (1 << sm_i)) != 0 && B.kv_live[sm_i] -> sm_remove(sm_i)
            :: else -> skip
            fi;
            sm_i++
       :: else -> break
       od
  :: else -> skip
  fi;
  sm_res(C_OK, nt, 0, ls)
}

/* state._check_fences: a claimed key needs its own claim's fence; a fenced write needs a
 * current claim. Sets sm_go = 0 and the FencedOut result when refused. */
#ifdef BUG_FENCE_LE
#define FENCE_STALE(f, cur)  ((f) > (cur))       /* planted: any token up to the current passes */
#else
#define FENCE_STALE(f, cur)  ((f) != (cur))      /* the code: fence.fence != claim.fence */
#endif
inline sm_fences() {
  if
  :: B.c_owner[C.key] != 0 &&
     (C.fkey == NONE || C.fkey != C.key || FENCE_STALE(C.ffence, B.c_fence[C.key])) ->
       sm_go = 0; sm_res(C_FENCED_OUT, N_NONE, 0, 0)
  :: else ->
       skip;
       if
       :: C.fkey != NONE && (B.c_owner[C.fkey] == 0 || FENCE_STALE(C.ffence, B.c_fence[C.fkey])) ->
            sm_go = 0; sm_res(C_FENCED_OUT, N_NONE, 0, 0)
       :: else -> skip
       fi
  fi
}

/* policies.reject_stale (put and delete alike) -> sm_go = 0 + StaleVersion when refused. */
inline sm_reject_stale() {
  if
  :: B.kv_live[C.key] -> sm_have = B.kv_ver[C.key]
  :: else -> sm_have = 0
  fi;
  if
  :: C.expect != NONE && C.expect != sm_have -> sm_go = 0; sm_res(C_STALE, N_NONE, 0, 0)
  :: C.expect == NONE && B.kv_live[C.key] -> sm_go = 0; sm_res(C_STALE, N_NONE, 0, 0)
  :: else -> skip
  fi
}

/* state._new_lease (quota not modelled) -> id in sm_l */
inline sm_new_lease(owner) {
  sm_l = B.next_lease;
  B.next_lease++;
  B.l_live[sm_l] = 1; B.l_owner[sm_l] = owner; B.l_ref[sm_l] = 0; B.l_keys[sm_l] = 0
}

/* state._owned_lease_or_refuse */
inline sm_owned() {
  if
  :: !B.l_live[C.lease] -> sm_go = 0; sm_res(C_NOT_FOUND, N_NONE, 0, 0)
  :: else ->
       skip;
       if
       :: B.l_owner[C.lease] != C.agent -> sm_go = 0; sm_res(C_POLICY, N_NONE, 0, 0)
       :: else -> skip
       fi
  fi
}

/* state._dispatch (+ _put, _delete, _claim): result in `res`. */
inline sm_dispatch() {
  sm_go = 1;
  sm_k = C.key;
  HOOK_DISPATCHED();
  if
  :: C.op == OP_PUT ->                                                  /* _put */
       sm_fences();
       sm_l = C.lease;
       if
       :: sm_go && sm_l != 0 && !B.l_live[sm_l] ->                      /* _lease_or_refuse */
            sm_go = 0; sm_res(C_NOT_FOUND, N_NONE, 0, 0)
       :: else -> skip
       fi;
       if
       :: sm_go && B.c_owner[C.key] != 0 && sm_l == 0 -> sm_l = B.c_lease[C.key]
       :: sm_go && B.c_owner[C.key] != 0 && sm_l != 0 && sm_l != B.c_lease[C.key] ->
            sm_go = 0; sm_res(C_INVALID, N_NONE, 0, 0)                /* keeps its claim's lease */
       :: else -> skip
       fi;
       if
       :: sm_go -> sm_reject_stale()
       :: else -> skip
       fi;
       if
       :: sm_go ->
            if
            :: C.fkey != NONE -> HOOK_FENCED_WRITE()
            :: else -> skip
            fi;
            sm_write(sm_k, sm_l);
            sm_res(C_OK, N_NONE, B.kv_ver[C.key], 0)
       :: else -> skip
       fi
#ifndef SM_NO_LEASES
  :: C.op == OP_DEL ->                                                  /* _delete */
       sm_fences();
       if
       :: sm_go && !B.kv_live[C.key] -> sm_go = 0; sm_res(C_NOT_FOUND, N_NONE, 0, 0)
       :: else -> skip
       fi;
       if
       :: sm_go -> sm_reject_stale()
       :: else -> skip
       fi;
       if
       :: sm_go ->
            if
            :: C.fkey != NONE -> HOOK_FENCED_WRITE()
            :: else -> skip
            fi;
            sm_have = B.kv_ver[C.key];
            B.revision++;
            sm_remove(sm_k);
            sm_res(C_OK, N_NONE, sm_have, 0)
       :: else -> skip
       fi
  :: C.op == OP_CLAIM ->                                                /* _claim */
       if
       :: B.c_owner[C.key] == C.agent ->
            sm_res(C_OK, N_HELD, B.c_fence[C.key], B.c_lease[C.key])
       :: B.c_owner[C.key] != 0 && B.c_owner[C.key] != C.agent ->
            sm_res(C_CLAIM_HELD, N_NONE, 0, 0)
       :: B.c_owner[C.key] == 0 && B.kv_live[C.key] ->
            sm_res(C_CLAIM_HELD, N_NONE, 0, 0)                        /* key-exists */
       :: else ->
            sm_new_lease(C.agent);
#ifndef BUG_CLAIM_NO_BUMP
            B.fence_counter++;
#endif
            sm_write(sm_k, sm_l);
            B.c_owner[C.key] = C.agent;
            B.c_fence[C.key] = B.fence_counter;
            B.c_lease[C.key] = sm_l;
            HOOK_CLAIMED(C.key);
            sm_res(C_OK, N_NONE, B.fence_counter, sm_l)
       fi
  :: C.op == OP_GRANT ->
       sm_new_lease(C.agent);
       sm_res(C_OK, N_NONE, 0, sm_l)
  :: C.op == OP_KA ->
       sm_owned();
       if
       :: sm_go ->
            B.l_ref[C.lease]++;
            HOOK_KEEPALIVE();
            sm_res(C_OK, N_NONE, B.l_ref[C.lease], C.lease)
       :: else -> skip
       fi
  :: C.op == OP_REVOKE ->
       sm_owned();
       if
       :: sm_go -> sm_end_lease(C.lease, N_REVOKED)
       :: else -> skip
       fi
  :: C.op == OP_EXPIRE ->                                 /* ExpireLease(lease, refreshes) */
#ifdef BUG_NO_REFRESH_GUARD
       if
       :: !B.l_live[C.lease] -> sm_res(C_OK, N_GONE, 0, 0)
#else
       if
       :: !B.l_live[C.lease] || B.l_ref[C.lease] != C.refs -> sm_res(C_OK, N_GONE, 0, 0)
#endif
       :: else ->
            HOOK_EXPIRED();
            sm_end_lease(C.lease, N_EXPIRED)
       fi
#endif
#ifndef SM_NO_SESSIONS
  :: C.op == OP_CLOSE ->
       B.s_live[C.sess] = 0; B.s_agent[C.sess] = 0; B.s_floor[C.sess] = 0;
       B.s_last[C.sess] = 0;
       sm_j = 0;
       do
       :: sm_j < NQ -> sm_forget(C.sess * NQ + sm_j); sm_j++
       :: else -> break
       od;
       sm_res(C_OK, N_CLOSED, 0, 0)
#endif
  :: else -> skip                  /* open_session never reaches _dispatch */
  fi
}

#ifndef SM_NO_SESSIONS
/* state._open_session: the next id; evict least-recently-active past sessions_max (SMAX). */
inline sm_open() {
  sm_l = B.next_session;
  B.next_session++;
  B.s_live[sm_l] = 1; B.s_agent[sm_l] = C.agent; B.s_floor[sm_l] = 0;
  B.s_last[sm_l] = B.applied;
  do
  :: true ->
       sm_n = 0; sm_j = 0; sm_i = 0;      /* count live; sm_j: oldest (last_active, id) */
       do
       :: sm_i < NS ->
            if
            :: B.s_live[sm_i] ->
                 sm_n++;
                 if
                 :: sm_j == 0 || B.s_last[sm_i] < B.s_last[sm_j] -> sm_j = sm_i
                 :: else -> skip
                 fi
            :: else -> skip
            fi;
            sm_i++
       :: else -> break
       od;
       if
       :: sm_n > SMAX ->
            B.s_live[sm_j] = 0; B.s_agent[sm_j] = 0; B.s_floor[sm_j] = 0; B.s_last[sm_j] = 0;
            sm_i = 0;
            do
            :: sm_i < NQ -> sm_forget(sm_j * NQ + sm_i); sm_i++
            :: else -> break
            od
       :: else -> break
       fi
  od;
  res.code = C_OK; res.note = N_NONE; res.rev = B.revision; res.aux = sm_l; res.lease = 0
}

#endif

/* state._apply: every replica runs this, in log order, on committed entries only. */
inline sm_apply() {
  B.applied++;
  sm_go = 1; sm_cache = 0;
  if
#ifndef SM_NO_SESSIONS
  :: C.op == OP_OPEN -> sm_open(); sm_go = 0
#endif
#ifndef SM_NO_SESSIONS
  :: C.op != OP_OPEN && C.sess != 0 && !B.s_live[C.sess] ->
       sm_go = 0;
       if
       :: C.sess < B.next_session -> sm_res(C_EXPIRED, N_NONE, 0, 0)
       :: else -> sm_res(C_INVALID, N_NONE, 0, 0)
       fi
  :: C.op != OP_OPEN && C.sess != 0 && B.s_live[C.sess] && B.s_agent[C.sess] != C.agent ->
       sm_go = 0; sm_res(C_INVALID, N_NONE, 0, 0)               /* another agent's session */
  :: C.op != OP_OPEN && C.sess != 0 && B.s_live[C.sess] && B.s_agent[C.sess] == C.agent ->
       B.s_last[C.sess] = B.applied;
       if
       :: B.r_has[C.sess * NQ + C.seq] ->                           /* a retry: the original */
            sm_go = 0;
            res.code = B.r[C.sess * NQ + C.seq].code;
            res.note = B.r[C.sess * NQ + C.seq].note;
            res.rev = B.r[C.sess * NQ + C.seq].rev;
            res.aux = B.r[C.sess * NQ + C.seq].aux;
            res.lease = B.r[C.sess * NQ + C.seq].lease
       :: else ->
            sm_have = B.s_floor[C.sess];                            /* max(floor, acked_below) */
            if
            :: C.acked > sm_have -> sm_have = C.acked
            :: else -> skip
            fi;
            if
            :: C.seq < sm_have -> sm_go = 0; sm_res(C_INVALID, N_NONE, 0, 0) /* already acked */
            :: else ->
                 skip;
                 if
                 :: C.acked > B.s_floor[C.sess] ->                  /* forget acknowledged */
                      B.s_floor[C.sess] = C.acked;
                      sm_j = 0;
                      do
                      :: sm_j < NQ ->
                           if
                           :: sm_j < B.s_floor[C.sess] -> sm_forget(C.sess * NQ + sm_j)
                           :: else -> skip
                           fi;
                           sm_j++
                      :: else -> break
                      od
                 :: else -> skip
                 fi;
                 sm_n = 0; sm_j = 0;
                 do
                 :: sm_j < NQ ->
                      if
                      :: B.r_has[C.sess * NQ + sm_j] -> sm_n++
                      :: else -> skip
                      fi;
                      sm_j++
                 :: else -> break
                 od;
                 if
                 :: sm_n >= RMAX -> sm_go = 0; sm_res(C_INVALID, N_NONE, 0, 0) /* too many */
                 :: else -> sm_cache = 1
                 fi
            fi
       fi
#endif
  :: else -> skip                                                   /* no session */
  fi;
  if
  :: sm_go -> sm_dispatch()
  :: else -> skip
  fi;
  if
  :: sm_cache && C.op != OP_CLOSE ->
#ifdef BUG_FORGET
       sm_j = 0;                        /* planted: keep only the latest result per session */
       do
       :: sm_j < NQ -> sm_forget(C.sess * NQ + sm_j); sm_j++
       :: else -> break
       od;
#endif
       B.r_has[C.sess * NQ + C.seq] = 1;
       B.r[C.sess * NQ + C.seq].code = res.code;
       B.r[C.sess * NQ + C.seq].note = res.note;
       B.r[C.sess * NQ + C.seq].rev = res.rev;
       B.r[C.sess * NQ + C.seq].aux = res.aux;
       B.r[C.sess * NQ + C.seq].lease = res.lease
  :: else -> skip
  fi
}

/*
 * sessions.pml -- exactly-once client sessions: consensus/client/board.py retrying into the session
 * table of consensus/core/state.py (board_sm.pml: sm_apply <- _apply, sm_open <- _open_session).
 *
 * Model:
 *   * the client       agent 1 runs Board._propose for NCALLS sequential calls; call j is
 *                      put(key j-1) (reject-stale: a second application would be refused, so a
 *                      double apply is visible in the result too). Faithful to client.py:
 *                        _identity        reuse (session, seq) of an identical command whose
 *                                         outcome is unknown, if still in the current session;
 *                                         else a fresh seq in the current session (opened when
 *                                         there is none); `outstanding` holds unanswered seqs;
 *                        build            acked_below = min(outstanding) on every attempt;
 *                        _call_tracked    up to ATT attempts: a reply ends it; `not_leader`
 *                                         moves to the other replica; `outcome_unknown` or a
 *                                         timeout (any time after sending) set maybe_applied;
 *                                         out of attempts -> OutcomeUnknown if maybe_applied;
 *                        _remember_unknown an OutcomeUnknown keeps (session, seq) outstanding and
 *                                         reusable; the user may call the same command again
 *                                         (RETRIES times per call);
 *                        session_expired  forget the session; if an attempt of this call or
 *                                         of the call it retries may have applied (maybe_applied
 *                                         or reused) -> SessionExpired; else a second pass with
 *                                         fresh numbers. A retry whose session is already gone
 *                                         -> SessionExpired (never fresh numbers).
 *                      Opening a session is one committed OPEN (its retries, which may open
 *                      orphan sessions, are not modelled).
 *   * the cluster      two replicas; `leader` moves LCS times. A request reaching a non-leader
 *                      is answered not_leader; one reaching the leader becomes a proposal in
 *                      flight, tagged with the replica that took it. A proposal in flight may be
 *                      committed at any later time, in any order, or never (an old leader's
 *                      entry committed late, or lost with its leader); on commit it is applied
 *                      (sm_apply) and the replica that took it answers the result if it still
 *                      leads, else outcome_unknown.
 *   * the network      requests, proposals in flight and replies are bags: reordered, DUPS
 *                      duplicated, and lost (never delivered; for safety the same thing).
 *   * other agents     EVICT: agent 2 opens sessions (OPENS of them) and, with sessions_max
 *                      SMAX = 1, evicts the client's session (_open_session's LRU) -- what 4,096
 *                      other sessions do to a quiet one in production.
 *
 * Properties:
 *   S1 each (session, seq) reaches _dispatch at most once           (the session table dedups)
 *   S2 a reply for (session, seq) equals the result of its one application (retries included;
 *      session_expired, once the bounded table evicted the session, is the one other answer)
 *   S3 each call's command is applied at most once, whatever numbers its attempts carried
 *      (README "Exactly-once": a retry, also after OutcomeUnknown through the same Board,
 *      applies at most once)
 *
 * Negative control: BUG_FORGET (board_sm.pml) -- the table keeps only the latest result of a
 * session: after call 1 ends in OutcomeUnknown and call 2 applies, the user's retry of call 1
 * (same session and seq, as the Board promises) is applied again (S1 fails).
 *
 * EVICT adds eviction of the client's session. It found a real bug (fixed): a call that reused
 * the numbers of an earlier OutcomeUnknown and got session_expired on its first attempt took
 * the "nothing applied" branch and sent the command again under a new session (S3 failed).
 * client.py now raises SessionExpired whenever an attempt of the call, or of the call it
 * retries, may have applied; -DBUG_RESEND_AFTER_EXPIRY restores the old client as a negative
 * control that must fail S3.
 */

#define NREP 1
#define NA 2
#define NK 2
#define NL 1
#define SM_NO_LEASES

#ifndef NCALLS
#define NCALLS 2      /* sequential Board calls                          */
#endif
#ifndef ATT
#define ATT 1         /* attempts per _call_tracked pass (--large: 2)    */
#endif
#ifndef RETRIES
#define RETRIES 1     /* user retries of a call that raised OutcomeUnknown */
#endif
#ifndef LCS
#define LCS 1         /* leadership changes                              */
#endif
#ifndef DUPS
#define DUPS 1        /* duplicated messages                             */
#endif
#ifdef EVICT
#define SMAX 1
#define OPENS 1
#define NS 5          /* session ids 1..4: the client reopens after an eviction */
#define NQ 6          /* seqs 1..5: second passes and retries take fresh seqs */
#else
#define SMAX 4        /* never reached: no eviction */
#define OPENS 0
#define NS 2          /* one session, id 1 */
#define NQ (NCALLS + 1) /* seqs 1..NCALLS: retries reuse their numbers */
#endif
#define RMAX 4
#define QB 2          /* requests in flight                              */
#define PB 2          /* proposals in flight                             */
#define YB 2          /* replies in flight                               */

#define HOOK_DISPATCHED() \
  assert(g_sq[C.sess * NQ + C.seq] == 0); g_sq[C.sess * NQ + C.seq] = 1; \
  if \
  :: C.op == OP_PUT -> assert(g_op[C.key] == 0); g_op[C.key] = 1 \
  :: else -> skip \
  fi

bool g_sq[NS * NQ];           /* S1: (session, seq) dispatched                  */
bool g_op[NK];                /* S3: call's command applied                      */
byte g_rev[NS * NQ];          /* S2: the result of that one application          */
byte g_code[NS * NQ];

#include "board_sm.pml"

/* a message: a request (client -> replica), a proposal in flight, or a reply */
typedef Msg {
  byte kind;                  /* 0: free slot; requests/proposals: 1; replies: R_* */
  byte sess;
  byte seq;
  byte acked;
  byte key;                   /* which call's command */
  byte att;                   /* which attempt (replies to older ones are ignored) */
  byte srv;                   /* proposals: the replica that took it; requests: the target */
  byte code;                  /* replies: the result */
  byte rev;
};
#define R_RESULT 1
#define R_NOT_LEADER 2
#define R_UNKNOWN 3

Msg qbag[QB];
Msg pbag[PB];
Msg ybag[YB];

byte leader;
byte lcs = LCS;
byte dups = DUPS;
byte opens = OPENS;

/* the client (Board) */
byte session;                 /* Board._session */
byte seqno;                   /* Board._seq */
byte outstanding;             /* Board._outstanding, a bit set over seqs */
byte u_sess[NCALLS + 1];      /* Board._unknown: command -> (session, seq) */
byte u_seq[NCALLS + 1];
byte call;                    /* the call in progress (0: none) */
byte next_call = 1;
byte retries[NCALLS + 1];
byte pass;                    /* _propose's pass: 1 or 2 */
byte cs;                      /* this pass's (session, seq) */
byte cq;
byte att;                     /* attempts made in this pass */
bool waiting;                 /* an attempt is out, no reply yet */
bool maybe;                   /* _call_tracked's maybe_applied */
bool reused;                  /* _identity reused an OutcomeUnknown's (session, seq) */
byte tgt;                     /* the replica the client believes leads */

byte k;                       /* scratch, zeroed after use */

inline clear_msg(m) {
  m.kind = 0; m.sess = 0; m.seq = 0; m.acked = 0; m.key = 0; m.att = 0; m.srv = 0; m.code = 0;
  m.rev = 0
}

inline copy_msg(d, s) {
  d.kind = s.kind; d.sess = s.sess; d.seq = s.seq; d.acked = s.acked; d.key = s.key;
  d.att = s.att; d.srv = s.srv; d.code = s.code; d.rev = s.rev
}

/* -> ybag. A reply the client is not waiting for (an older attempt, another call) is dropped at
 * once: the real client matches replies by request id on a live link and ignores the rest.
 * No room: the reply is lost. */
inline reply(m, kd, cd, rv) {
  k = 0;
  if
  :: !(waiting && m.att == att && m.sess == cs && m.seq == cq) -> k = YB
  :: else -> skip
  fi;
  do
  :: k < YB && ybag[k].kind != 0 -> k++
  :: else -> break
  od;
  if
  :: k < YB ->
       ybag[k].kind = kd; ybag[k].sess = m.sess; ybag[k].seq = m.seq; ybag[k].att = m.att;
       ybag[k].key = m.key; ybag[k].code = cd; ybag[k].rev = rv
  :: else -> skip
  fi;
  k = 0
}

/* commit one OPEN directly (the session id comes back at once) */
inline open_session(a) {
  d_step {
    sm_r = 0;
    C.op = OP_OPEN; C.agent = a; C.key = 0; C.fkey = NONE; C.ffence = 0; C.lease = 0;
    C.expect = NONE; C.refs = 0; C.sess = 0; C.seq = 0; C.acked = 0; C.obs = 0;
    sm_apply()
  }
}

/* _identity + the start of a _propose pass for call `call` */
inline identity() {
  reused = 0;
  if
  :: u_sess[call] != 0 && u_sess[call] == session ->      /* a retry of an unknown outcome */
       cs = u_sess[call]; cq = u_seq[call]; u_sess[call] = 0; u_seq[call] = 0; reused = 1
#ifndef BUG_RESEND_AFTER_EXPIRY
  :: u_sess[call] != 0 && u_sess[call] != session ->      /* its session is gone: the outcome */
       outstanding = outstanding & (255 - (1 << u_seq[call]));  /* can't be learned, so    */
       u_sess[call] = 0; u_seq[call] = 0;                 /* SessionExpired, not a resend  */
       printf("call %d raises SessionExpired (its unknown outcome's session is gone)\n", call);
       end_call()
#endif
  :: else ->
       if
       :: u_sess[call] != 0 ->                               /* its session is gone */
            outstanding = outstanding & (255 - (1 << u_seq[call]));
            u_sess[call] = 0; u_seq[call] = 0
       :: else -> skip
       fi;
       if
       :: session == 0 -> open_session(1); session = res.aux  /* _ensure_session */
       :: else -> skip
       fi;
       seqno++;
       outstanding = outstanding | (1 << seqno);
       cs = session; cq = seqno
  fi;
  att = 0; maybe = 0; waiting = 0
}

inline end_call() {
  call = 0; pass = 0; cs = 0; cq = 0; att = 0; maybe = 0; waiting = 0; reused = 0
}

init {
  byte i;
  d_step { brd[0].next_lease = 1; brd[0].next_session = 1 };
end:
  do
  /* --- the user starts the next call, or calls a command again after its OutcomeUnknown */
  :: atomic {
       call == 0 && next_call <= NCALLS ->
       call = next_call; next_call++; pass = 1; identity()
     }
  :: atomic {
       select(i : 1 .. NCALLS);
       if
       :: call == 0 && u_sess[i] != 0 && retries[i] < RETRIES ->
            retries[i]++; call = i; pass = 1; identity()
       :: else -> skip
       fi;
       i = 0
     }
  /* --- an attempt: the request goes to the believed leader (acked_below = min(outstanding)) */
  :: atomic {
       call != 0 && !waiting && att < ATT && (qbag[0].kind == 0 || qbag[1].kind == 0) ->
       if
       :: qbag[0].kind == 0 -> k = 0
       :: else -> k = 1
       fi;
       qbag[k].kind = 1; qbag[k].sess = cs; qbag[k].seq = cq; qbag[k].key = call - 1;
       qbag[k].att = att + 1; qbag[k].srv = tgt;
       i = 0;                                         /* min(outstanding) */
       do
       :: i < NQ && (outstanding & (1 << i)) == 0 -> i++
       :: else -> break
       od;
       if
       :: i < NQ -> qbag[k].acked = i
       :: else -> qbag[k].acked = cq
       fi;
       printf("call %d pass %d attempt %d: session %d seq %d -> replica %d\n", call, pass,
              att + 1, cs, cq, tgt);
       att++; waiting = 1; i = 0; k = 0
     }
  /* --- the attempt times out (it was sent: it may have applied) */
  :: atomic { waiting -> waiting = 0; maybe = 1; tgt = 1 - tgt }
  /* --- out of attempts: OutcomeUnknown (remembered) or Unavailable */
  :: atomic {
       call != 0 && !waiting && att == ATT ->
       if
       :: maybe -> u_sess[call] = cs; u_seq[call] = cq;          /* _remember_unknown */
            printf("call %d raises OutcomeUnknown\n", call)
       :: else -> outstanding = outstanding & (255 - (1 << cq))
       fi;
       end_call()
     }
  /* --- a replica takes a request: not_leader, or a proposal in flight */
  :: atomic {
       select(i : 0 .. QB - 1);
       if
       :: qbag[i].kind != 0 && qbag[i].srv != leader ->
            reply(qbag[i], R_NOT_LEADER, 0, 0); clear_msg(qbag[i])
       :: qbag[i].kind != 0 && qbag[i].srv == leader && (pbag[0].kind == 0 || pbag[1].kind == 0) ->
            if
            :: pbag[0].kind == 0 -> k = 0
            :: else -> k = 1
            fi;
            copy_msg(pbag[k], qbag[i]); clear_msg(qbag[i]); k = 0
       :: else -> skip
       fi;
       i = 0
     }
  /* --- a proposal in flight commits: applied; its replica answers (if it still leads) */
  :: atomic {
       select(i : 0 .. PB - 1);
       if
       :: pbag[i].kind != 0 ->
            d_step {
              sm_r = 0;
              C.op = OP_PUT; C.agent = 1; C.key = pbag[i].key; C.fkey = NONE; C.ffence = 0;
              C.lease = 0; C.expect = NONE; C.refs = 0; C.sess = pbag[i].sess;
              C.seq = pbag[i].seq; C.acked = pbag[i].acked; C.obs = 0;
              sm_apply();
              printf("commit put(key %d) session %d seq %d acked_below %d -> code %d rev %d\n",
                     C.key, C.sess, C.seq, C.acked, res.code, res.rev);
              if
              :: g_sq[C.sess * NQ + C.seq] && g_rev[C.sess * NQ + C.seq] == 0 ->
                   g_rev[C.sess * NQ + C.seq] = res.rev + 1;   /* +1: 0 means unrecorded */
                   g_code[C.sess * NQ + C.seq] = res.code
              :: else -> skip
              fi
            };
            if
            :: pbag[i].srv == leader -> reply(pbag[i], R_RESULT, res.code, res.rev)
            :: else -> reply(pbag[i], R_UNKNOWN, 0, 0)
            fi;
            clear_msg(pbag[i])
       :: else -> skip
       fi;
       i = 0
     }
  /* --- the network duplicates a request or a proposal. Not with EVICT (unless DUP_REQUESTS):
   * a copy applied after the eviction is answered session_expired, which the client reads as
   * "nothing applied" while the other copy did apply. The real system never makes that copy:
   * a request crosses one TCP connection once and server.py proposes it once, so a second
   * application of the same numbers needs a second attempt, which sets maybe_applied. With
   * DUP_REQUESTS the limit shows (expected violated): no bounded session table can keep
   * exactly-once under a network that duplicates requests across an eviction. */
#if !defined(EVICT) || defined(DUP_REQUESTS)
  :: atomic {
       dups > 0 && qbag[0].kind != 0 && qbag[1].kind == 0 -> copy_msg(qbag[1], qbag[0]); dups--
     }
  :: atomic {
       dups > 0 && pbag[0].kind != 0 && pbag[1].kind == 0 -> copy_msg(pbag[1], pbag[0]); dups--
     }
#endif
  /* --- the client reads a reply (one for an older attempt, or another call, is ignored) */
  :: atomic {
       select(i : 0 .. YB - 1);
       if
       :: ybag[i].kind != 0 && waiting && ybag[i].att == att && ybag[i].sess == cs &&
            ybag[i].seq == cq ->
            waiting = 0;
            if
            :: ybag[i].kind == R_NOT_LEADER -> tgt = 1 - tgt
            :: ybag[i].kind == R_UNKNOWN -> maybe = 1; tgt = 1 - tgt
            :: ybag[i].kind == R_RESULT ->
                 /* S2: a reply equals the result of the one application */
                 assert(!g_sq[cs * NQ + cq] || ybag[i].code == C_EXPIRED ||
                        (ybag[i].rev + 1 == g_rev[cs * NQ + cq] &&
                         ybag[i].code == g_code[cs * NQ + cq]));
                 outstanding = outstanding & (255 - (1 << cq));      /* finally: discard */
                 if
                 :: ybag[i].code == C_EXPIRED ->
                      if
                      :: session == cs -> session = 0
                      :: else -> skip
                      fi;
                      if
#ifdef BUG_RESEND_AFTER_EXPIRY
                      :: maybe || pass == 2 -> end_call()    /* the client before the fix */
#else
                      :: maybe || reused || pass == 2 -> end_call()       /* SessionExpired */
#endif
                      :: else ->                              /* "nothing applied": again */
                           printf("call %d: session_expired, not retried -> second pass\n", call);
                           pass = 2; identity()
                      fi
                 :: else -> end_call()
                 fi
            fi;
            clear_msg(ybag[i])
       :: ybag[i].kind != 0 && !(waiting && ybag[i].att == att && ybag[i].sess == cs &&
            ybag[i].seq == cq) ->
            clear_msg(ybag[i])
       :: else -> skip
       fi;
       i = 0
     }
  /* --- leadership moves */
  :: atomic { lcs > 0 -> leader = 1 - leader; lcs-- }
  /* --- another agent opens a session (EVICT: evicting the least recently active) */
  :: atomic {
       opens > 0 -> open_session(2); opens--;
       printf("agent 2 opens session %d\n", res.aux)
     }
  od
}

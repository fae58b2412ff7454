/*
 * raft.pml -- leader-based log replication with crash-restart, 3 replicas: Raft (Ongaro &
 * Ousterhout, "In Search of an Understandable Consensus Algorithm", extended version, 2014) as
 * quorumboard runs it in consensus/raft/node.py (pysyncobj 0.3.17 plus the project's hardening).
 *
 * WHAT IS MODELLED
 *   Replicas. proctype Replica, _pid 0..2. Persistent state: currentTerm, votedFor, log (the
 *     journal and its .meta, consensus/raft/journal.py, which syncs "before we talk": every step here
 *     persists before anything it sends can be seen). Volatile state: role and the leader's
 *     matchIndex[], lost by a crash-restart. commitIndex is volatile too and not a variable
 *     here (see COMMIT below).
 *   AppendEntries and its replies (§5.3) travel in a NETWORK that is a bounded SET of messages
 *     (net[NMSG], kept sorted so that two orders of one set are one state): any message may be
 *     delivered at any time (reordering), delivered and left in flight to be delivered again
 *     (duplication), or dropped at any time (loss, proctype Network). A send into a full network
 *     is a loss. Nothing relies on FIFO/TCP order.
 *   RequestVote (§5.2) uses the same semantics in a denser encoding: a candidate's RequestVote
 *     for term T has one content (its last log index/term at candidacy; the log of a candidate
 *     does not change while it stays a candidate of T), so "sent" is a monotone record rvSent[];
 *     a voter may receive it at any later time, any number of times, or never. Likewise a vote
 *     granted by v in term T is a reply that stays deliverable forever (record gv[]): the
 *     candidate becomes leader at any time while it is still candidate of T once the grants of
 *     a majority exist -- or never (all lost). Replies that only carry a higher term (a refused
 *     vote, a failed append, §5.1 "if RPC request or response contains term T > currentTerm")
 *     are covered by LearnTerm: any replica may adopt any term some replica has reached, as a
 *     follower with no vote -- an over-approximation of every such message, hence sound.
 *   Timeouts are free: any non-leader may start an election at any time (§5.2), a leader may
 *     step down at any time (pysyncobj's leaderFallbackTimeout), any replica may crash/restart.
 *   nextIndex is abstracted: a leader may send AppendEntries for ANY prefix of its log
 *     (prevLogIndex 0..len), carrying at most one entry, so every nextIndex policy is covered
 *     (raft.py's optimistic nextIndex included). Failed appends need no reply (the leader would
 *     only lower nextIndex, which the abstraction already allows).
 *   COMMIT (§5.3, §5.4.2). A leader commits index n when a majority's matchIndex >= n and
 *     entry n is of its current term; the ghost cmt[] records what was committed. A replica may
 *     apply ANY committed index up to the last entry the current leader's AppendEntries has
 *     verified (raft.py clamps commitIndex to exactly that): the real commitIndex/leaderCommit
 *     (<= that) lets it apply a subset, so checking every such index on every accepted append
 *     checks every apply the code can make, after every restart included.
 *   Entries are (term, creator): the creator is the leader that appended it (a client command
 *     or pysyncobj's no-op after election, §8) -- a tiny value domain that still tells apart two
 *     leaders of one term.
 *   Canonical form (inline gc): records and messages that can no longer change anything are
 *     forgotten after each step, and the network is kept sorted; see gc() for why this only
 *     merges states that have the same futures.
 *
 * WHERE THE CODE DIFFERS (kept visible, not silently modelled away)
 *   - pysyncobj counts vote replies (votesCount += 1 per response_vote) rather than voters; that
 *     is safe only because TCP does not duplicate and a voter answers once per term. The model
 *     counts the SET of voters, as Raft requires once duplication is possible.
 *   - pysyncobj 0.3.17's AppendEntries reply (next_node_idx) carries no term, so its leader
 *     cannot tell a stale reply from an earlier term. consensus/raft/_pysyncobj.py adds the
 *     replier's current term and the leader drops a reply of any other term; the model's reply
 *     carries that term (MTERM) and the leader takes a reply only if it equals its current term
 *     (AER_TERM_OK). -DCODE_AER_NO_TERM models pysyncobj without the fix: the term is sent but
 *     not read (see proofs/README.md for what SPIN said about it).
 *
 * BOUNDS (macros; the defaults are the CI bound; `quorumboard prove --large` uses NMSG=3; the
 *   third-term rows MAXTERM=3, NMSG=1 with MAXLOG=1, or 2 under --large: proofs/raft_checks.py)
 *   MAXTERM  highest term any replica may reach      default 2  (at most 4: 3-bit fields)
 *   MAXLOG   longest log                              default 2  (at most 3)
 *   NMSG     AppendEntries messages in flight at once default 2  (at most 4)
 *
 * PROPERTIES (one per run, -DPROP_...; the ghost state each needs is compiled in only for it;
 * replies and matchIndex only for the three properties that depend on them)
 *   PROP_ELECTION  Election Safety (Figure 3, §5.2): at most one leader per term over the whole
 *                  history (ghost leaderOf[term]), not just among the live leaders.
 *   PROP_MATCHING  Log Matching (Figure 3, §5.3): two logs with an entry of the same index and
 *                  term are identical in all entries up through that index (checked after every
 *                  log change).
 *   PROP_COMPLETE  Leader Completeness (Figure 3, §5.4): an entry committed in term T is in the
 *                  log of every leader of every term > T (checked when a leader is elected; a
 *                  leader's log only grows during its term).
 *   PROP_SMS       State Machine Safety (Figure 3, §5.4.3): no two replicas apply different
 *                  entries at one index: every apply (see COMMIT) equals the committed entry.
 *   PROP_CONFIRM   Current-term acknowledgement (§5.1, §5.3; the precondition of ReadIndex,
 *                  thesis §6.4): every AppendEntries reply a leader counts -- toward matchIndex
 *                  and commitment, or as an acknowledgement of its leadership (any reply it
 *                  takes, whether or not matchIndex rises) -- answers an AppendEntries that this
 *                  leader sent in its CURRENT term. The reply carries, as a ghost the leader
 *                  never reads, the term of the append it answers (field e); the leader's rule
 *                  reads only the term the replier put in (field t, its currentTerm when it
 *                  replied), so the row checks that the two agree wherever a reply is taken.
 *   PROP_READ      ReadIndex (thesis §6.4) as consensus/raft/_pysyncobj.py serves it: a
 *                  linearizable read reflects every entry committed before it started. One read
 *                  at a time (reads are independent; a batched read joins a round started after
 *                  it arrived, which is the same as its own). Two ways to serve one:
 *                  - a leader's round: the leader, once an entry of its own term is committed
 *                    (lcmt, its commit index as leader), takes its commit index as the read
 *                    index and sends a heartbeat (qb_heartbeat, or any AppendEntries carrying
 *                    the round); a member answers with its current term at any later time (or
 *                    never: loss), and the leader counts an answer only if that term is its
 *                    own; it serves once a majority, itself included, answered while still
 *                    leading that term (_qb_confirmed_round, _qb_resolve_rounds).
 *                  - a follower's ask in a group of three (_qb_on_ask): the asker records its
 *                    term when it sends; a leader whose current term equals it, with an own-term
 *                    commit, answers with its commit index at once, at any later time.
 *                  The check, when a read is served at read index x by leader l: every index the
 *                  ghost cmt[] held when the read started (bitmask rdSnap) is <= x and holds the
 *                  same entry in l's log (what l has applied up to x is what the read sees).
 *
 * PLANTED BUGS (negative controls: SPIN must find a counterexample)
 *   BUG_NO_MAJORITY       a candidate becomes leader on its own vote        -> Election Safety
 *   BUG_COMMIT_OLD_TERM   the leader commits an entry of an older term by counting replicas
 *                         (Figure 8; needs 4 terms: MAXTERM=4, MAXLOG=1)    -> Leader Completeness
 *   BUG_TRUNCATE_MATCHING the follower truncates after prevLogIndex although the entry matches:
 *                         pysyncobj 0.3.17's own behaviour, which consensus/raft/node.py
 *                         (_trim_matching_entries) removes; a delayed or duplicated append then
 *                         erases an acknowledged entry                      -> Leader Completeness
 *   BUG_NO_UPTODATE       voters skip the election restriction (§5.4.1)    -> Leader Completeness
 *   CODE_AER_NO_TERM      pysyncobj 0.3.17 as shipped: the leader takes a reply of any term
 *                                                                          -> PROP_CONFIRM
 *   BUG_READ_UNCONFIRMED  the leader serves a read without its heartbeat round (the harness's
 *                         unconfirmed-reads bug): a deposed leader reads stale -> PROP_READ
 *   BUG_READ_NO_OWN_TERM  a new leader serves reads before an entry of its term is committed: its
 *                         commit index may lag its predecessor's        -> PROP_READ
 *   BUG_ASK_ANY_TERM      the leader answers a follower's ask at once whatever term the asker
 *                         was in: a newer leader the asker voted for may exist -> PROP_READ
 */

#ifndef MAXTERM
#define MAXTERM 2
#endif
#ifndef MAXLOG
#define MAXLOG 2
#endif
#ifndef NMSG
#define NMSG 2
#endif

#define N 3
#define NONE 3                     /* votedFor: nobody */
#ifdef BUG_NO_MAJORITY
#define QUORUM 1
#else
#define QUORUM 2                   /* majority of 3 */
#endif

#define FOLLOWER 0
#define CANDIDATE 1
#define LEADER 2

/* ---- entries: (term << 2) | creator; 0 = no entry ------------------------------------- */
#define ENTRY(t, c) (((t) << 2) | (c))
#define ETERM(e) ((e) >> 2)

/* ---- AppendEntries messages, packed in one int; 0 = free slot -------------------------- */
#define AE  1   /* AppendEntries(term, prevLogIndex a, prevLogTerm b, entry e, leaderCommit c) */
#define AER 2   /* successful AppendEntries reply(term, matchIndex b, ghost: answered term e)
                 * -- pysyncobj next_node_idx, plus the term consensus/raft/_pysyncobj.py adds */
#define MSG(ty, s, d, t, a, b, e, c) \
	((ty) | ((s) << 2) | ((d) << 4) | ((t) << 6) | ((a) << 9) | ((b) << 11) | ((e) << 14) | ((c) << 19))
#define MTYPE(m) ((m) & 3)
#define MSRC(m)  (((m) >> 2) & 3)
#define MDST(m)  (((m) >> 4) & 3)
#define MTERM(m) (((m) >> 6) & 7)
#define MA(m)    (((m) >> 9) & 3)
#define MB(m)    (((m) >> 11) & 7)
#define ME(m)    (((m) >> 14) & 31)
#define MC(m)    (((m) >> 19) & 3)

/* Per-property slicing: commitment cannot influence who is elected or what is in the logs
 * (nothing in Raft reads commitIndex except applying and leaderCommit), so the runs for
 * Election Safety and Log Matching leave out the AppendEntries replies and matchIndex. */
#if defined(PROP_READ) || defined(PROP_READ_ASK)
#define READS 1
#endif
#if defined(PROP_COMPLETE) || defined(PROP_SMS) || defined(PROP_CONFIRM) || defined(READS)
#define REPLIES 1
#endif
/* PROP_CONFIRM: a leader takes every reply of its term (an acknowledgement of its leadership
 * counts even when matchIndex does not rise); otherwise only one that raises matchIndex. */
#ifdef PROP_CONFIRM
#define RAISES(m, l) 1
#else
#define RAISES(m, l) (MB(m) > MATCH_OF(l, MSRC(m)))
#endif

/* ---- replica state ----------------------------------------------------------------------- */
/* persistent (journal + .meta, consensus/raft/journal.py) */
byte currentTerm[N];
byte votedFor[N] = NONE;
byte loglen[N];
byte log[N * MAXLOG];              /* LOG(r, i), i = 1..MAXLOG */
/* volatile (lost on crash) */
byte role[N];
#ifdef REPLIES
byte matchIdx[N * N];              /* MATCH(leader, peer); zero unless that replica leads */
#ifdef READS
byte lcmt[N];                      /* the commit index a replica reached as leader of its term */
#define RESET_MATCH(r) MATCH(r, 0) = 0; MATCH(r, 1) = 0; MATCH(r, 2) = 0; lcmt[r] = 0
#else
#define RESET_MATCH(r) MATCH(r, 0) = 0; MATCH(r, 1) = 0; MATCH(r, 2) = 0
#endif
#define MATCH_OF(l, p) MATCH(l, p)
#else
#define MATCH_OF(l, p) 0
#define RESET_MATCH(r) skip
#endif
/* RequestVote traffic as monotone records (see header): both indexed [replica][term] */
byte rvSent[N * (MAXTERM + 1)];    /* 0: no RequestVote; else 1 + (lastLogIndex << 3 | lastLogTerm) */
byte gv[N * (MAXTERM + 1)];        /* 1 + the candidate this voter granted in that term, 0: none */

#define LOG(r, i) log[(r) * MAXLOG + (i) - 1]
#define MATCH(l, p) matchIdx[(l) * N + (p)]
#define RVS(r, t) rvSent[(r) * (MAXTERM + 1) + (t)]
#define GV(r, t) gv[(r) * (MAXTERM + 1) + (t)]
#define LASTTERM(r) (loglen[r] == 0 -> 0 : ETERM(LOG(r, loglen[r])))
#define MAXCUR (currentTerm[0] > currentTerm[1] -> \
	(currentTerm[0] > currentTerm[2] -> currentTerm[0] : currentTerm[2]) : \
	(currentTerm[1] > currentTerm[2] -> currentTerm[1] : currentTerm[2]))

/* §5.4.1 election restriction: a candidate whose log ends in (lt, li) is at least as
 * up-to-date as the voter me */
#ifdef BUG_NO_UPTODATE
#define UP_TO_DATE(lt, li) 1
#else
#define UP_TO_DATE(lt, li) ((lt) > LASTTERM(me) || ((lt) == LASTTERM(me) && (li) >= loglen[me]))
#endif
/* §5.4.2: a leader counts replicas only for an entry of its own term */
#ifdef BUG_COMMIT_OLD_TERM
#define COMMIT_TERM_OK(n) 1
#else
#define COMMIT_TERM_OK(n) (ETERM(LOG(me, n)) == currentTerm[me])
#endif

/* The leader takes a reply only from its current term. pysyncobj's reply (next_node_idx) carries
 * no term at all; CODE_AER_NO_TERM models that: a stale reply from an earlier term counts. */
#ifdef CODE_AER_NO_TERM
#define AER_TERM_OK(m, t) 1
#else
#define AER_TERM_OK(m, t) (MTERM(m) == (t))
#endif

int net[NMSG];

/* ---- ghost state for the properties ------------------------------------------------------ */
#ifdef PROP_ELECTION
byte leaderOf[MAXTERM + 1];        /* 1 + id of the leader elected in that term, 0 = none yet */
#endif
#if defined(PROP_COMPLETE) || defined(PROP_SMS) || defined(READS)
byte cmt[MAXLOG + 1];              /* entry first committed/applied at index i, 0 = none */
#endif
#ifdef READS
/* the one read in flight: rdKind 0 none, 1 a leader's round (leader rdL, term rdT, read index
 * rdIdx, answers rdAck as a bitmask of replicas), 2 a follower's ask (asker rdL, its term rdT);
 * rdSnap: the indexes cmt[] held when the read started (cmt[i] never changes once set) */
#define RD_NONE 0
#define RD_ROUND 1
#define RD_ASK 2
byte rdKind, rdL, rdT, rdIdx, rdAck, rdSnap;
#endif
#ifdef PROP_COMPLETE
byte cmtTerm[MAXLOG + 1];          /* the term in which index i was first known committed */
#endif

/* scratch for the d_steps: never live between steps, so hidden from the state vector */
hidden int msg;
hidden int tmp;
hidden byte i, j, k, q, nacks, newc, last;

/* ---- the network (a bounded set) ---------------------------------------------------------- */

/* Keep net[] sorted (descending, free slots last) so that two orders of the same set of
 * messages are one state. Bounded: NMSG passes of NMSG-1 compares. */
inline canon() {
	i = 0;
	do
	:: i < NMSG ->
		j = 0;
		do
		:: j < NMSG - 1 ->
			if
			:: net[j] < net[j + 1] -> tmp = net[j]; net[j] = net[j + 1]; net[j + 1] = tmp
			:: else -> skip
			fi;
			j++
		:: else -> break
		od;
		i++
	:: else -> break
	od
	;skip
}

/* Send m: already in flight -> nothing new (set semantics: a copy is a duplicate, which the
 * network models anyway); a free slot -> put it there; network full -> the message is lost. */
#define send(m) tmp = (m); send_tmp()
inline send_tmp() {
	k = 0;
	do
	:: k < NMSG && net[k] == tmp -> break
	:: k < NMSG && net[k] == 0 -> net[k] = tmp; break
	:: k < NMSG && net[k] != tmp && net[k] != 0 -> k++
	:: k >= NMSG -> break           /* full: lost */
	od;
	canon()
}


/* Forget what can no longer change anything -- a canonical form, not a restriction: a record or
 * message removed here could only ever have been ignored or dropped (and dropping is allowed
 * anyway), so every behaviour of the state with it is a behaviour of the state without it.
 *   GV(v, t) = c+1 matters only while c is still a candidate of t (it can only count votes then);
 *   RVS(c, t) matters only while some peer has currentTerm < t, or == t without a vote;
 *   an AppendEntries of term t is dead once its receiver's term is > t (rule 1 refuses it);
 *   a reply of term t is dead unless its receiver still leads in t and it raises matchIndex
 *   (PROP_CONFIRM: every reply of the term counts, see RAISES)
 *   (with CODE_AER_NO_TERM a reply can matter to a later term, so replies are kept). */
inline gc() {
	i = 1;
	do
	:: i <= MAXTERM ->
		j = 0;
		do
		:: j < N ->
			if
			:: GV(j, i) != 0 && !(role[GV(j, i) - 1] == CANDIDATE && currentTerm[GV(j, i) - 1] == i) ->
				GV(j, i) = 0
			:: else -> skip
			fi;
			if
			:: RVS(j, i) != 0 &&
			   (currentTerm[(j + 1) % N] > i || (currentTerm[(j + 1) % N] == i && votedFor[(j + 1) % N] != NONE)) &&
			   (currentTerm[(j + 2) % N] > i || (currentTerm[(j + 2) % N] == i && votedFor[(j + 2) % N] != NONE)) ->
				RVS(j, i) = 0
			:: else -> skip
			fi;
			j++
		:: else -> break
		od;
		i++
	:: else -> break
	od;
	q = 0;
	k = 0;
	do
	:: k < NMSG ->
		tmp = net[k];
		if
		:: tmp != 0 && MTYPE(tmp) == AE && MTERM(tmp) < currentTerm[MDST(tmp)] -> net[k] = 0; q = 1
#ifndef CODE_AER_NO_TERM
		:: tmp != 0 && MTYPE(tmp) == AER &&
		   !(role[MDST(tmp)] == LEADER && AER_TERM_OK(tmp, currentTerm[MDST(tmp)]) &&
		     RAISES(tmp, MDST(tmp))) -> net[k] = 0; q = 1
#endif
		:: else -> skip
		fi;
		k++
	:: else -> break
	od;
	if
	:: q -> canon()
	:: else -> skip
	fi;
#ifdef READS
	/* a round whose leader no longer leads its term fails (_qb_reads_tick); an ask no replica
	 * can still answer (every term is past the asker's) can only time out */
	if
	:: rdKind == RD_ROUND && !(role[rdL] == LEADER && currentTerm[rdL] == rdT) ->
		rdKind = RD_NONE; rdL = 0; rdT = 0; rdIdx = 0; rdAck = 0; rdSnap = 0
	:: rdKind == RD_ASK && currentTerm[0] > rdT && currentTerm[1] > rdT && currentTerm[2] > rdT ->
		rdKind = RD_NONE; rdL = 0; rdT = 0; rdIdx = 0; rdAck = 0; rdSnap = 0
	:: else -> skip
	fi
#endif
	skip
}

/* ---- property checks (inlines, compiled in per property) ---------------------------------- */

/* State Machine Safety / ghost commit record: replica r applies entries old+1 .. upto
 * (raft.py RaftNode._apply_entry runs on the tick thread as pysyncobj's lastApplied advances). */
inline applied(r, old, upto) {
#if defined(PROP_COMPLETE) || defined(PROP_SMS) || defined(READS)
	i = old + 1;
	do
	:: i <= upto ->
		if
		:: cmt[i] == 0 -> cmt[i] = LOG(r, i);
#ifdef PROP_COMPLETE
			cmtTerm[i] = currentTerm[r]
#endif
		:: else ->
#ifdef PROP_SMS
			assert(cmt[i] == LOG(r, i))     /* State Machine Safety */
#else
			skip
#endif
		fi;
		i++
	:: else -> break
	od
#else
	skip
#endif
}

/* Log Matching over all pairs of replicas (checked after every log change). */
inline check_matching() {
#ifdef PROP_MATCHING
	i = 0;
	do
	:: i < N ->
		j = i + 1;
		do
		:: j < N ->
			k = 1;
			do
			:: k <= loglen[i] && k <= loglen[j] ->
				if
				:: ETERM(LOG(i, k)) == ETERM(LOG(j, k)) ->
					q = 1;
					do
					:: q <= k -> assert(LOG(i, q) == LOG(j, q)); q++   /* Log Matching */
					:: else -> break
					od
				:: else -> skip
				fi;
				k++
			:: else -> break
			od;
			j++
		:: else -> break
		od;
		i++
	:: else -> break
	od
#else
	skip
#endif
}

/* Election Safety + Leader Completeness, checked the moment r becomes leader of its term. */
inline check_new_leader(r) {
#ifdef PROP_ELECTION
	assert(leaderOf[currentTerm[r]] == 0 || leaderOf[currentTerm[r]] == r + 1);  /* Election Safety */
	leaderOf[currentTerm[r]] = r + 1;
#endif
#ifdef PROP_COMPLETE
	i = 1;
	do
	:: i <= MAXLOG ->
		assert(cmt[i] == 0 || cmtTerm[i] >= currentTerm[r] ||
		       (loglen[r] >= i && LOG(r, i) == cmt[i]));                           /* Leader Completeness */
		i++
	:: else -> break
	od;
#endif
	skip
}

/* ReadIndex: serve the read in flight at read index x by leader l (see PROP_READ). */
inline serve_read(l, x) {
#ifdef READS
	printf("EV r%d serves a read at index %d (term %d)\n", l, x, currentTerm[l]);
	i = 1;
	do
	:: i <= MAXLOG ->
		assert(!(rdSnap & (1 << i)) || (i <= x && LOG(l, i) == cmt[i]));   /* ReadIndex */
		i++
	:: else -> break
	od;
	rdKind = RD_NONE; rdL = 0; rdT = 0; rdIdx = 0; rdAck = 0; rdSnap = 0
#else
	skip
#endif
}

/* the indexes committed so far, as a bitmask (the read's snapshot) */
inline snapshot_cmt() {
#ifdef READS
	rdSnap = 0;
	i = 1;
	do
	:: i <= MAXLOG ->
		if
		:: cmt[i] != 0 -> rdSnap = rdSnap | (1 << i)
		:: else -> skip
		fi;
		i++
	:: else -> break
	od
#else
	skip
#endif
}

/* ---- one replica -------------------------------------------------------------------------- */

#define me _pid

#ifdef READS
/* _qb_own_term_committed: the leader's commit index holds an entry of its current term */
#ifdef BUG_READ_NO_OWN_TERM
#define OWN_TERM_COMMITTED(r) 1
#else
#define OWN_TERM_COMMITTED(r) (lcmt[r] > 0 && ETERM(LOG(r, lcmt[r])) == currentTerm[r])
#endif
#ifdef BUG_READ_UNCONFIRMED
#define ROUND_CONFIRMED 1
#else
#define ROUND_CONFIRMED (((rdAck & 1) + ((rdAck >> 1) & 1) + ((rdAck >> 2) & 1)) >= QUORUM)
#endif
#ifdef BUG_ASK_ANY_TERM
#define ASK_TERM_OK(r) 1
#else
#define ASK_TERM_OK(r) (currentTerm[r] == rdT)
#endif
#endif

/* §5.1: a newer term makes the receiver a follower of that term with no vote
 * (pysyncobj __onMessageReceived: __setCurrentTerm(term, None); FOLLOWER). Persisted. */
inline observe_term(t) {
	if
	:: t > currentTerm[me] -> currentTerm[me] = t; votedFor[me] = NONE; role[me] = FOLLOWER;
		RESET_MATCH(me)
	:: else -> skip
	fi
}

/* RequestVote receiver (§5.2, §5.4.1; pysyncobj 'request_vote'): c's RequestVote of term t. */
#define RECV_RV(c, t) \
	:: d_step { RVS(c, t) != 0 && (t) >= currentTerm[me] && \
	            !((t) == currentTerm[me] && votedFor[me] != NONE) -> \
		observe_term(t); \
		if \
		:: votedFor[me] == NONE && UP_TO_DATE((RVS(c, t) - 1) & 7, (RVS(c, t) - 1) >> 3) -> \
			votedFor[me] = c; GV(me, t) = c + 1; \
			printf("EV r%d votes for r%d in term %d\n", me, c, t) \
		:: else -> skip \
		fi; gc() }

/* AppendEntries receiver (§5.3, Figure 2 receiver rules 1-5) as consensus/raft/node.py hardens it:
 * an entry that matches is NOT truncated (_trim_matching_entries), and commitIndex advances to
 * min(leaderCommit, index of the last entry this message verified). A stale-term append is
 * refused (rule 1); its reply would only carry a term (see LearnTerm). */
inline on_append_entries() {
	observe_term(MTERM(msg));
	if
	:: MTERM(msg) == currentTerm[me] &&
	   !(MA(msg) == 0 || (MA(msg) <= loglen[me] && ETERM(LOG(me, MA(msg))) == MB(msg))) ->
		role[me] = FOLLOWER                          /* rule 2: no match at prevLogIndex */
	:: MTERM(msg) == currentTerm[me] &&
	   (MA(msg) == 0 || (MA(msg) <= loglen[me] && ETERM(LOG(me, MA(msg))) == MB(msg))) ->
		role[me] = FOLLOWER;       /* a candidate of this term recognises the leader */
		last = MA(msg);
		if
		:: ME(msg) != 0 ->
			last = MA(msg) + 1;
			if
#ifndef BUG_TRUNCATE_MATCHING
			:: last <= loglen[me] && ETERM(LOG(me, last)) == ETERM(ME(msg)) -> skip  /* have it */
#endif
			:: else ->                              /* rules 3-4: cut the conflict, append */
				LOG(me, last) = ME(msg);
				k = last + 1;
				do
				:: k <= loglen[me] -> LOG(me, k) = 0; k++
				:: else -> break
				od;
				loglen[me] = last;
				printf("EV r%d stores entry %d of term %d from r%d (log len now %d)\n",
				       me, last, ETERM(ME(msg)), MSRC(msg), loglen[me])
			fi
		:: else -> skip
		fi;
#ifdef PROP_SMS
		/* rule 5 + apply: this replica may now apply every committed index up to the last
		 * entry this message verified (raft.py clamps commitIndex there); see header */
		i = 1;
		do
		:: i <= last && cmt[i] != 0 -> assert(cmt[i] == LOG(me, i)); i++   /* State Machine Safety */
		:: else -> break
		od;
#endif
		check_matching();
#ifdef REPLIES
		/* the reply carries currentTerm (the replier adopted the append's term above) and,
		 * as a ghost for PROP_CONFIRM only, the answered append's term */
#ifdef PROP_CONFIRM
		send(MSG(AER, me, MSRC(msg), currentTerm[me], 0, last, MTERM(msg), 0))
#else
		send(MSG(AER, me, MSRC(msg), currentTerm[me], 0, last, 0, 0))
#endif
#else
		skip
#endif
	:: else -> skip                                  /* rule 1: stale leader */
	fi
}

/* AppendEntries reply at the leader: matchIndex only grows (pysyncobj 'next_node_idx'), then the
 * commit rule (§5.3, §5.4.2): the highest index stored on a majority whose entry is of the
 * CURRENT term (BUG_COMMIT_OLD_TERM: of any term -- the Figure 8 bug). */
inline on_append_reply() {
#ifdef REPLIES
#ifdef PROP_CONFIRM
	assert(ME(msg) == currentTerm[me]);        /* current-term acknowledgement */
#endif
	if
	:: MB(msg) > MATCH(me, MSRC(msg)) -> MATCH(me, MSRC(msg)) = MB(msg)
	:: else -> skip
	fi;
	newc = 0;
	k = loglen[me];
	do
	:: k > 0 ->
		nacks = 1 + (MATCH(me, (me + 1) % N) >= k) + (MATCH(me, (me + 2) % N) >= k);
		if
		:: nacks >= 2 && COMMIT_TERM_OK(k) -> newc = k; break
		:: else -> k--
		fi
	:: else -> break
	od;
	if
	:: newc > 0 ->
		printf("EV r%d (leader, term %d) commits up to index %d\n", me, currentTerm[me], newc);
#ifdef READS
		if
		:: newc > lcmt[me] -> lcmt[me] = newc
		:: else -> skip
		fi;
#endif
		applied(me, 0, newc)     /* commitIndex is not kept: the ghost record is idempotent */
	:: else -> skip
	fi
#else
	skip
#endif
}

/* Can message m do anything at me? (Anything else could only be dropped: that is loss.) */
#define USEFUL(m) (MDST(m) == me && \
	((MTYPE(m) == AE && MTERM(m) >= currentTerm[me]) || \
	 (MTYPE(m) == AER && role[me] == LEADER && AER_TERM_OK(m, currentTerm[me]) && \
	  RAISES(m, me))))

inline deliver() {
	if
	:: MTYPE(msg) == AE -> on_append_entries()
	:: else -> on_append_reply()
	fi
}

/* Receive the message in slot s: it leaves the network, or (KEEP_COPY) a copy stays in flight
 * and may be delivered again later (duplication). */
#define KEEP_COPY(s) \
	:: d_step { net[s] != 0 && USEFUL(net[s]) -> msg = net[s]; deliver(); gc() }
#define RECEIVE(s) \
	:: d_step { net[s] != 0 && USEFUL(net[s]) -> msg = net[s]; net[s] = 0; canon(); deliver(); gc() } \
	KEEP_COPY(s)

/* Leader sends AppendEntries to peer p with prevLogIndex x (any prefix: nextIndex abstracted),
 * carrying entry x+1 if it has one (else it is a heartbeat). The leaderCommit field is 0: see
 * COMMIT in the header for why applying is checked without it. */
#define SEND_AE(p, x) \
	:: d_step { role[me] == LEADER && (x) <= loglen[me] -> \
		send(MSG(AE, me, p, currentTerm[me], x, ((x) == 0 -> 0 : ETERM(LOG(me, x))), \
		         ((x) < loglen[me] -> LOG(me, (x) + 1) : 0), 0)); skip }

/* LearnTerm: adopt term t that some replica has reached (a refused vote, a failed append or any
 * stale message carrying t, §5.1). */
#define LEARN_TERM(t) \
	:: d_step { currentTerm[me] < (t) && MAXCUR >= (t) -> \
		currentTerm[me] = t; votedFor[me] = NONE; role[me] = FOLLOWER; RESET_MATCH(me); gc() }

active [N] proctype Replica() {
/* end: at the term bound the system may go quiet; that is not a deadlock */
end:	do
	/* §5.2 election timeout: candidate of the next term, votes for itself, sends RequestVote
	 * (pysyncobj sends it to every peer at once; here: recorded once, deliverable forever). */
	:: d_step { role[me] != LEADER && currentTerm[me] < MAXTERM ->
		currentTerm[me]++; votedFor[me] = me; role[me] = CANDIDATE;
		GV(me, currentTerm[me]) = me + 1;
		RVS(me, currentTerm[me]) = 1 + ((loglen[me] << 3) | LASTTERM(me));
		printf("EV r%d times out: candidate in term %d (log len %d)\n", me, currentTerm[me], loglen[me]);
		gc() }
	/* a RequestVote from either peer, of any term it was sent in */
	RECV_RV((me + 1) % N, 1)
	RECV_RV((me + 2) % N, 1)
#if MAXTERM >= 2
	RECV_RV((me + 1) % N, 2)
	RECV_RV((me + 2) % N, 2)
#endif
#if MAXTERM >= 3
	RECV_RV((me + 1) % N, 3)
	RECV_RV((me + 2) % N, 3)
#endif
#if MAXTERM >= 4
	RECV_RV((me + 1) % N, 4)
	RECV_RV((me + 2) % N, 4)
#endif
	/* §5.2: granted votes of a majority delivered -> leader (pysyncobj __onBecomeLeader:
	 * matchIndex = 0 for every peer) */
	:: d_step { role[me] == CANDIDATE &&
	            1 + (GV((me + 1) % N, currentTerm[me]) == me + 1) +
	                (GV((me + 2) % N, currentTerm[me]) == me + 1) >= QUORUM ->
		role[me] = LEADER;
		printf("EV r%d becomes leader of term %d (log len %d)\n", me, currentTerm[me], loglen[me]);
		check_new_leader(me); gc() }
	/* §5.3: the leader appends a new entry (a client proposal, or pysyncobj's no-op after
	 * election) to its own log, persisted; a leader never overwrites its own log. */
	:: d_step { role[me] == LEADER && loglen[me] < MAXLOG ->
		loglen[me]++; LOG(me, loglen[me]) = ENTRY(currentTerm[me], me);
		printf("EV r%d (leader, term %d) appends entry %d\n", me, currentTerm[me], loglen[me]);
		check_matching(); skip }
	/* §5.3: AppendEntries to each peer, for every prevLogIndex the bound allows */
	SEND_AE((me + 1) % N, 0)
	SEND_AE((me + 2) % N, 0)
	SEND_AE((me + 1) % N, 1)
	SEND_AE((me + 2) % N, 1)
#if MAXLOG >= 2
	SEND_AE((me + 1) % N, 2)
	SEND_AE((me + 2) % N, 2)
#endif
#if MAXLOG >= 3
	SEND_AE((me + 1) % N, 3)
	SEND_AE((me + 2) % N, 3)
#endif
	/* receive any message addressed to me, from any slot: reordering */
	RECEIVE(0)
#if NMSG >= 2
	RECEIVE(1)
#endif
#if NMSG >= 3
	RECEIVE(2)
#endif
#if NMSG >= 4
	RECEIVE(3)
#endif
	/* LearnTerm (see header) */
	LEARN_TERM(1)
#if MAXTERM >= 2
	LEARN_TERM(2)
#endif
#if MAXTERM >= 3
	LEARN_TERM(3)
#endif
#if MAXTERM >= 4
	LEARN_TERM(4)
#endif
#ifdef PROP_READ
	/* ReadIndex (thesis §6.4), see PROP_READ. A leader with an own-term commit starts a round:
	 * its commit index is the read index, it counts itself, its heartbeat goes out. */
	:: d_step { rdKind == RD_NONE && role[me] == LEADER && OWN_TERM_COMMITTED(me) ->
		rdKind = RD_ROUND; rdL = me; rdT = currentTerm[me]; rdIdx = lcmt[me];
		rdAck = 1 << me; snapshot_cmt();
		printf("EV r%d starts a read round at index %d (term %d)\n", me, rdIdx, rdT) }
	/* a member answers the round's heartbeat (delivered at any time after the round started)
	 * with its current term; the leader counts it only if that is the round's term */
	:: d_step { rdKind == RD_ROUND && rdL != me && !(rdAck & (1 << me)) &&
	            currentTerm[me] == rdT -> rdAck = rdAck | (1 << me) }
	/* the leader serves the round's reads once a majority answered, still leading its term */
	:: d_step { rdKind == RD_ROUND && rdL == me && role[me] == LEADER &&
	            currentTerm[me] == rdT && ROUND_CONFIRMED -> serve_read(me, rdIdx); gc() }
#endif
#ifdef PROP_READ_ASK
	/* a follower asks the leader for a read index, in its current term (_qb_send_asks sends
	 * only to a known leader, so a candidate's reads wait until it follows one) */
	:: d_step { rdKind == RD_NONE && role[me] == FOLLOWER ->
		rdKind = RD_ASK; rdL = me; rdT = currentTerm[me]; snapshot_cmt();
		printf("EV r%d asks for a read index (term %d)\n", me, rdT); gc() }
	/* a leader of the asker's term with an own-term commit answers at once with its commit
	 * index (a group of three: the asker and the leader are a majority in that term) */
	:: d_step { rdKind == RD_ASK && rdL != me && role[me] == LEADER && ASK_TERM_OK(me) &&
	            OWN_TERM_COMMITTED(me) -> serve_read(me, lcmt[me]); gc() }
#endif
	/* pysyncobj leaderFallbackTimeout: a leader without a quorum's replies steps down */
	:: d_step { role[me] == LEADER -> role[me] = FOLLOWER; RESET_MATCH(me);
		printf("EV r%d steps down (term %d)\n", me, currentTerm[me]); gc() }
	/* crash + restart: term, vote and log survive (journal); role and matchIndex do not
	 * (commitIndex is not kept, see COMMIT). Messages in flight stay in flight. */
	:: d_step { role[me] != FOLLOWER ->
		role[me] = FOLLOWER; RESET_MATCH(me);
		printf("EV r%d crashes and restarts (term %d, log len %d)\n", me, currentTerm[me], loglen[me]);
		gc() }
	od
}

/* The network loses any message in flight. */
#define DROP(s) :: d_step { net[s] != 0 -> net[s] = 0; canon(); skip }

active proctype Network() {
end:	do
	DROP(0)
#if NMSG >= 2
	DROP(1)
#endif
#if NMSG >= 3
	DROP(2)
#endif
#if NMSG >= 4
	DROP(3)
#endif
	od
}

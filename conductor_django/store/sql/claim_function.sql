-- conductor_django_claim: PostgreSQL's claim with task limits, in one call.
--
-- The readable truth of the function as the newest migration that installs it does
-- (today 0018_claim_byte_order; its caller: store/claims/postgresql.py, which documents
-- the parameters and the locking). Migrations are frozen copies of this text;
-- tests/test_claim_function_sql.py checks that the newest one installs exactly it.
--
-- To change the function:
--   1. edit this file (below this header);
--   2. add a new migration (the next number) whose FORWARD is this text, copied in
--      literally, and whose backward installs the previous migration's FORWARD
--      (as 0018 does for 0017); leave the older migrations as they are;
--   3. run tests/test_claim_function_sql.py and the claim tests on PostgreSQL.
-- Only this header (the comment lines at the top) is not part of the function's text.

CREATE OR REPLACE FUNCTION conductor_django_claim(
    p_worker uuid, p_now timestamptz, p_limit integer, p_queues text[], p_skip text[],
    p_exclude uuid[], p_names text[], p_caps integer[], p_keyed boolean[],
    p_key_caps integer[], p_task_starts integer[], p_key_starts integer[],
    p_since timestamptz[], p_turns text[], p_lock_class integer
) RETURNS TABLE (
    c_id uuid, c_task text, c_queue text, c_payload jsonb, c_attempts integer,
    c_max_attempts integer, c_priority integer, c_fresh integer, c_event text,
    c_schedule text, c_parent uuid, c_lease bigint, c_key text
) LANGUAGE plpgsql VOLATILE SET plan_cache_mode = auto SET jit = off AS $$
DECLARE
    v_locked text[];
    v_ids uuid[];
    v_rns bigint[];
    v_more_ids uuid[];
    v_more_rns bigint[];
    v_name text;
    v_room integer;
    v_key_cap integer;
    v_running bigint;
    v_keys bigint;
    v_per bigint;
    a_ids uuid[];
    a_rns bigint[];
    a_grp integer[];
    a_keys text[];
    a_room integer[];
    v_key_starts integer;
    v_since timestamptz;
    v_turn text;
BEGIN
    -- The statements read by task name: plan them once per connection, not per call
    -- (the SET clause above restores the caller's mode on return).
    PERFORM set_config('plan_cache_mode', 'force_generic_plan', true);

    -- One statement: the task names with runnable rows, by a loose scan of the key
    -- index (one probe per name); of those, the limited tasks with a runnable row and a
    -- free slot, try-locked (a task another claim holds is left out of this one, like a
    -- row under SKIP LOCKED); and the plain tasks' best rows, locked, which need no task
    -- lock. A limited task's backlog is thus skipped in one probe, not row by row.
    -- (Rows with a key - every key is a non-empty string - sort by ``priority + 0``:
    -- not the priority index, which would step over the rows of every task. No JIT:
    -- the generic plans' estimates are high, their runs short.)
    WITH RECURSIVE tasks(name) AS (
        (SELECT e.task_name::text FROM conductor_django_execution AS e
         WHERE e.status IN ('pending', 'suspended') ORDER BY e.task_name COLLATE "C" LIMIT 1)
        UNION ALL
        SELECT (SELECT e.task_name::text FROM conductor_django_execution AS e
                WHERE e.status IN ('pending', 'suspended') AND e.task_name COLLATE "C" > t.name
                ORDER BY e.task_name COLLATE "C" LIMIT 1)
        FROM tasks AS t WHERE t.name IS NOT NULL
    ), present(name) AS MATERIALIZED (
        SELECT name FROM tasks WHERE name IS NOT NULL
    ), plain(name) AS (
        SELECT name FROM present WHERE NOT (name = ANY(p_skip))
    )
    SELECT COALESCE((
        SELECT array_agg(t.name) FROM unnest(p_names, p_caps) AS t(name, cap)
        WHERE t.name IN (SELECT name FROM present)
          AND CASE WHEN (SELECT 1 FROM conductor_django_execution AS e WHERE e.task_name COLLATE "C" = t.name
                         AND e.status IN ('pending', 'suspended') AND e.run_at <= p_now
                         AND (p_queues IS NULL OR e.queue = ANY(p_queues))
                         ORDER BY e.task_name COLLATE "C", e.flow_key COLLATE "C", e.priority DESC, e.run_at
                         LIMIT 1) IS NOT NULL
                   AND (t.cap = 2147483647 OR (SELECT COUNT(*) FROM conductor_django_execution AS r
                        WHERE r.task_name = t.name AND r.status = 'running') < t.cap)
              THEN pg_try_advisory_xact_lock(p_lock_class, hashtext(t.name))
              ELSE false END), '{}'),
        ARRAY(SELECT p.id FROM (
            SELECT c.id, c.priority, c.run_at FROM plain CROSS JOIN LATERAL (
                SELECT e.id, e.priority, e.run_at FROM conductor_django_execution AS e
                WHERE e.task_name COLLATE "C" = plain.name AND e.flow_key IS NULL AND e.status IN ('pending', 'suspended') AND e.run_at <= p_now AND (p_queues IS NULL OR e.queue = ANY(p_queues)) AND NOT (e.id = ANY(p_exclude))
                ORDER BY e.task_name COLLATE "C", e.flow_key COLLATE "C", e.priority DESC, e.run_at
                LIMIT p_limit FOR UPDATE OF e SKIP LOCKED) AS c
            UNION ALL
            SELECT c.id, c.priority, c.run_at FROM plain CROSS JOIN LATERAL (
                SELECT e.id, e.priority, e.run_at FROM conductor_django_execution AS e
                WHERE e.task_name COLLATE "C" = plain.name AND e.flow_key COLLATE "C" > '' AND e.status IN ('pending', 'suspended') AND e.run_at <= p_now AND (p_queues IS NULL OR e.queue = ANY(p_queues)) AND NOT (e.id = ANY(p_exclude))
                ORDER BY e.priority + 0 DESC, e.run_at LIMIT p_limit
                FOR UPDATE OF e SKIP LOCKED) AS c
        ) AS p ORDER BY p.priority DESC, p.run_at LIMIT p_limit)
    INTO v_locked, v_ids;

    IF cardinality(v_locked) = 0 THEN
        RETURN QUERY UPDATE conductor_django_execution AS u SET status = 'running', locked_by = p_worker, locked_at = p_now, started_at = COALESCE(started_at, p_now), attempts = CASE WHEN resume THEN attempts ELSE attempts + 1 END, resume = false, lease = lease + 1 WHERE u.id = ANY(v_ids)
            RETURNING u.id, u.task_name::text, u.queue::text, u.payload, u.attempts, u.max_attempts, u.priority, CASE WHEN u.started_at = u.locked_at THEN 1 ELSE 0 END, u.event_name::text, u.schedule_name::text, u.parent_id, u.lease, u.flow_key::text;
        RETURN;
    END IF;

    -- Every following statement sees the claims committed before the locks were taken.
    v_rns := array_fill(1::bigint, ARRAY[cardinality(v_ids)]);
    FOR i IN 1 .. cardinality(p_names) LOOP
        v_name := p_names[i];
        CONTINUE WHEN NOT (v_name = ANY(v_locked));
        v_room := p_limit;
        v_key_cap := CASE WHEN p_keyed[i] THEN p_key_caps[i] END;
        v_running := NULL;
        IF p_caps[i] < 2147483647 THEN
            SELECT COUNT(*) INTO v_running FROM conductor_django_execution AS r
            WHERE r.task_name = v_name AND r.status = 'running';
            v_room := LEAST(v_room, p_caps[i] - v_running);
        END IF;
        IF p_task_starts[i] IS NOT NULL THEN
            v_room := LEAST(v_room, p_task_starts[i] - (
                SELECT COUNT(*) FROM conductor_django_execution AS r WHERE r.task_name = v_name
                AND r.started_at >= p_since[i]));
        END IF;
        CONTINUE WHEN v_room <= 0;
        IF NOT p_keyed[i] THEN
            -- the rows without a key in the order of the key index, the others sorted
            SELECT array_agg(s.id), array_agg(1::bigint) INTO v_more_ids, v_more_rns
            FROM (SELECT b.id FROM (
                    (SELECT e.id, e.priority, e.run_at FROM conductor_django_execution AS e
                     WHERE e.task_name COLLATE "C" = v_name AND e.flow_key IS NULL AND e.status IN ('pending', 'suspended') AND e.run_at <= p_now AND (p_queues IS NULL OR e.queue = ANY(p_queues)) AND NOT (e.id = ANY(p_exclude))
                     ORDER BY e.task_name COLLATE "C", e.flow_key COLLATE "C", e.priority DESC, e.run_at
                     LIMIT v_room)
                    UNION ALL
                    (SELECT e.id, e.priority, e.run_at FROM conductor_django_execution AS e
                     WHERE e.task_name COLLATE "C" = v_name AND e.flow_key COLLATE "C" > '' AND e.status IN ('pending', 'suspended') AND e.run_at <= p_now AND (p_queues IS NULL OR e.queue = ANY(p_queues)) AND NOT (e.id = ANY(p_exclude))
                     ORDER BY e.priority + 0 DESC, e.run_at LIMIT v_room)) AS b
                  ORDER BY b.priority DESC, b.run_at LIMIT v_room) AS s;
        ELSE
            v_key_starts := p_key_starts[i];
            v_since := p_since[i];
            v_turn := p_turns[i];
            -- Round-robin: the runnable keys after the turn, then from the first key up
            -- to the turn (a loose index scan: one probe per key, which also gives the
            -- key's best row), with what each key's limits leave of the room; and the
            -- executions without a key, one more group bound by the task's limits only.
            -- In the round's order: a key's first row before any key's second, then
            -- the keys after the turn, the rows without a key, the keys up to the turn.
            SELECT array_agg(w.id ORDER BY w.rn, w.grp, w.k COLLATE "C"), array_agg(w.rn ORDER BY w.rn, w.grp, w.k COLLATE "C"), array_agg(w.grp ORDER BY w.rn, w.grp, w.k COLLATE "C"),
                   array_agg(w.k ORDER BY w.rn, w.grp, w.k COLLATE "C"), array_agg(w.room ORDER BY w.rn, w.grp, w.k COLLATE "C"),
                   COUNT(*) FILTER (WHERE w.k IS NOT NULL)
            INTO a_ids, a_rns, a_grp, a_keys, a_room, v_keys
            FROM (
                WITH RECURSIVE after_turn(k, id, pr, ra) AS (
                    (SELECT e.flow_key::text, e.id, e.priority, e.run_at FROM conductor_django_execution AS e WHERE e.task_name COLLATE "C" = v_name AND e.flow_key COLLATE "C" > v_turn AND e.status IN ('pending', 'suspended') AND e.run_at <= p_now AND (p_queues IS NULL OR e.queue = ANY(p_queues)) AND NOT (e.id = ANY(p_exclude)) ORDER BY e.task_name COLLATE "C", e.flow_key COLLATE "C", e.priority DESC, e.run_at LIMIT 1)
                    UNION ALL
                    SELECT n.* FROM after_turn AS a CROSS JOIN LATERAL (
                        SELECT e.flow_key::text, e.id, e.priority, e.run_at FROM conductor_django_execution AS e WHERE e.task_name COLLATE "C" = v_name AND e.flow_key COLLATE "C" > a.k AND e.status IN ('pending', 'suspended') AND e.run_at <= p_now AND (p_queues IS NULL OR e.queue = ANY(p_queues)) AND NOT (e.id = ANY(p_exclude)) ORDER BY e.task_name COLLATE "C", e.flow_key COLLATE "C", e.priority DESC, e.run_at LIMIT 1) AS n
                ), upto_turn(k, id, pr, ra) AS (
                    (SELECT e.flow_key::text, e.id, e.priority, e.run_at FROM conductor_django_execution AS e WHERE e.task_name COLLATE "C" = v_name AND e.flow_key COLLATE "C" > '' AND e.flow_key COLLATE "C" <= v_turn AND e.status IN ('pending', 'suspended') AND e.run_at <= p_now AND (p_queues IS NULL OR e.queue = ANY(p_queues)) AND NOT (e.id = ANY(p_exclude)) ORDER BY e.task_name COLLATE "C", e.flow_key COLLATE "C", e.priority DESC, e.run_at LIMIT 1)
                    UNION ALL
                    SELECT n.* FROM upto_turn AS b CROSS JOIN LATERAL (
                        SELECT e.flow_key::text, e.id, e.priority, e.run_at FROM conductor_django_execution AS e WHERE e.task_name COLLATE "C" = v_name AND e.flow_key COLLATE "C" > b.k AND e.flow_key COLLATE "C" <= v_turn AND e.status IN ('pending', 'suspended') AND e.run_at <= p_now AND (p_queues IS NULL OR e.queue = ANY(p_queues)) AND NOT (e.id = ANY(p_exclude)) ORDER BY e.task_name COLLATE "C", e.flow_key COLLATE "C", e.priority DESC, e.run_at LIMIT 1
                    ) AS n
                ), ks(k, id, grp) AS (
                    SELECT k, id, 0 FROM after_turn UNION ALL SELECT k, id, 2 FROM upto_turn
                    LIMIT p_limit
                )
                SELECT ks.k, ks.id, ks.grp, 1::bigint AS rn, GREATEST(LEAST(v_room,
                    CASE WHEN v_key_cap IS NULL THEN v_room
                    -- While the whole task runs no more than the per-key limit minus
                    -- the room, no key can reach its limit in this claim: its keys need
                    -- no count of their own. (The task's running executions: counted
                    -- above for a concurrency= limit, else once here.)
                    WHEN v_key_cap - COALESCE(v_running, (SELECT COUNT(*) FROM conductor_django_execution AS q
                        WHERE q.task_name = v_name AND q.status = 'running')) >= v_room
                    THEN v_room
                    ELSE v_key_cap - (SELECT COUNT(*) FROM conductor_django_execution AS r
                        WHERE r.task_name = v_name AND r.flow_key = ks.k
                        AND r.status = 'running') END,
                    CASE WHEN v_key_starts IS NULL THEN v_room
                    ELSE v_key_starts - (SELECT COUNT(*) FROM conductor_django_execution AS r
                        WHERE r.task_name = v_name AND r.flow_key = ks.k
                        AND r.started_at >= v_since) END), 0) AS room
                FROM ks
                UNION ALL
                SELECT NULL, n.id, 1, ROW_NUMBER() OVER (ORDER BY n.priority DESC, n.run_at),
                       v_room
                FROM (SELECT e.id, e.priority, e.run_at FROM conductor_django_execution AS e
                      WHERE e.task_name COLLATE "C" = v_name AND e.flow_key IS NULL AND e.status IN ('pending', 'suspended') AND e.run_at <= p_now AND (p_queues IS NULL OR e.queue = ANY(p_queues)) AND NOT (e.id = ANY(p_exclude))
                      ORDER BY e.task_name COLLATE "C", e.flow_key COLLATE "C", e.priority DESC, e.run_at
                      LIMIT v_room) AS n
            ) AS w WHERE w.room > 0;
            -- Every key with room gave its best row, so with m such keys no key's row
            -- past the (v_room - m + 1)-th can be among the v_room taken: with fewer
            -- keys than room, the keys' next rows join the round.
            v_per := v_room + 1 - v_keys;
            IF v_per > 1 AND v_keys > 0 THEN
                SELECT array_agg(x.id ORDER BY x.rn, x.grp, x.k COLLATE "C"),
                       array_agg(x.rn ORDER BY x.rn, x.grp, x.k COLLATE "C")
                INTO a_ids, a_rns
                FROM (
                    SELECT * FROM unnest(a_ids, a_rns, a_grp, a_keys) AS c(id, rn, grp, k)
                    UNION ALL
                    SELECT m.id, 1 + m.o, kp.grp, kp.k
                    FROM unnest(a_keys, a_room, a_grp) AS kp(k, room, grp)
                    CROSS JOIN LATERAL (
                        SELECT e.id, ROW_NUMBER() OVER (ORDER BY e.priority DESC, e.run_at) AS o
                        FROM (SELECT e.id, e.priority, e.run_at FROM conductor_django_execution AS e
                              WHERE e.task_name COLLATE "C" = v_name AND e.flow_key COLLATE "C" = kp.k
                              AND e.status IN ('pending', 'suspended') AND e.run_at <= p_now AND (p_queues IS NULL OR e.queue = ANY(p_queues)) AND NOT (e.id = ANY(p_exclude))
                              ORDER BY e.task_name COLLATE "C", e.flow_key COLLATE "C", e.priority DESC,
                              e.run_at OFFSET 1 LIMIT LEAST(kp.room, v_per) - 1) AS e
                    ) AS m
                    WHERE kp.k IS NOT NULL AND LEAST(kp.room, v_per) > 1
                ) AS x;
            END IF;
            v_more_ids := a_ids[1:v_room];
            v_more_rns := a_rns[1:v_room];
        END IF;
        v_ids := v_ids || COALESCE(v_more_ids, '{}');
        v_rns := v_rns || COALESCE(v_more_rns, '{}');
    END LOOP;

    -- The best p_limit candidates, by round (a key's first row before any key's
    -- second), priority and age; rows of limited tasks are locked here, rechecked.
    RETURN QUERY UPDATE conductor_django_execution AS u SET status = 'running', locked_by = p_worker, locked_at = p_now, started_at = COALESCE(started_at, p_now), attempts = CASE WHEN resume THEN attempts ELSE attempts + 1 END, resume = false, lease = lease + 1 WHERE u.id = ANY(ARRAY(
        SELECT e.id FROM unnest(v_ids, v_rns) WITH ORDINALITY AS c(id, rn, ord)
        JOIN conductor_django_execution AS e ON e.id = c.id
        WHERE e.status IN ('pending', 'suspended') AND e.run_at <= p_now
        ORDER BY c.rn, e.priority DESC, e.run_at, c.ord LIMIT p_limit
        FOR UPDATE OF e SKIP LOCKED))
        RETURNING u.id, u.task_name::text, u.queue::text, u.payload, u.attempts, u.max_attempts, u.priority, CASE WHEN u.started_at = u.locked_at THEN 1 ELSE 0 END, u.event_name::text, u.schedule_name::text, u.parent_id, u.lease, u.flow_key::text;
END;
$$;

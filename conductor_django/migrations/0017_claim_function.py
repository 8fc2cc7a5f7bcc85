"""PostgreSQL only: the claim with task limits as one server-side function, so that a
claim is one statement (one round trip) even when limited or keyed tasks are registered.

``conductor_django_claim`` try-locks the limited tasks that have a runnable row and a
free slot (transaction-level advisory locks), then - every statement of a ``VOLATILE``
PL/pgSQL function taking a new snapshot under READ COMMITTED, so after the locks - picks
each locked task's rows within its limits and marks the best ``p_limit`` of them and of
the plain tasks' rows running. Its statements are static, so their plans are cached per
connection. Other databases claim as before.
"""

from django.db import migrations

TABLE = "conductor_django_execution"

#: The runnable rows the caller may claim (``e``: the executions), as in every claim.
RUNNABLE = (
    "e.status IN ('pending', 'suspended') AND e.run_at <= p_now"
    " AND (p_queues IS NULL OR e.queue = ANY(p_queues)) AND NOT (e.id = ANY(p_exclude))"
)

#: The best runnable row of the next runnable key of the task after ``{after}`` (and,
#: with ``{upto}``, not past the turn): the key, the row's id, priority and run_at, by one
#: probe of the (task_name, flow_key, -priority, run_at) index of runnable rows.
NEXT_KEY = (
    f"SELECT e.flow_key::text, e.id, e.priority, e.run_at FROM {TABLE} AS e"
    f" WHERE e.task_name = v_name AND e.flow_key > {{after}}{{upto}} AND {RUNNABLE}"
    " ORDER BY e.task_name, e.flow_key, e.priority DESC, e.run_at LIMIT 1"
)

#: What the claim sets and returns (``store.claim.CLAIMED_COLUMNS``).
MARK = (
    "status = 'running', locked_by = p_worker, locked_at = p_now,"
    " started_at = COALESCE(started_at, p_now),"
    " attempts = CASE WHEN resume THEN attempts ELSE attempts + 1 END,"
    " resume = false, lease = lease + 1"
)
RETURNED = (
    "u.id, u.task_name::text, u.queue::text, u.payload, u.attempts, u.max_attempts,"
    " u.priority, CASE WHEN u.started_at = u.locked_at THEN 1 ELSE 0 END,"
    " u.event_name::text, u.schedule_name::text, u.parent_id, u.lease, u.flow_key::text"
)

FORWARD = f"""
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
    v_key_starts integer;
    v_since timestamptz;
    v_turn text;
BEGIN
    -- The statements read by task name: plan them once per connection, not per call
    -- (the SET clause above restores the caller's mode on return).
    PERFORM set_config('plan_cache_mode', 'force_generic_plan', true);

    -- The limited tasks with a runnable row and a free slot, try-locked: a task another
    -- claim holds is left out of this one, like a row under SKIP LOCKED.
    SELECT COALESCE(array_agg(t.name), '{{}}') INTO v_locked
    FROM unnest(p_names, p_caps) AS t(name, cap)
    WHERE CASE WHEN (SELECT 1 FROM {TABLE} AS e WHERE e.task_name = t.name
                     AND e.status IN ('pending', 'suspended') AND e.run_at <= p_now
                     AND (p_queues IS NULL OR e.queue = ANY(p_queues))
                     ORDER BY e.task_name, e.flow_key, e.priority DESC, e.run_at
                     LIMIT 1) IS NOT NULL
               AND (SELECT COUNT(*) FROM {TABLE} AS e WHERE e.task_name = t.name
                    AND e.status = 'running') < t.cap
          THEN pg_try_advisory_xact_lock(p_lock_class, hashtext(t.name)) ELSE false END;

    -- The plain tasks' best rows: their names by a loose scan of the key index (one
    -- probe per task with runnable rows), then each task's best rows, locked, so that
    -- a limited task's backlog is skipped in one probe, not row by row. (Rows with a
    -- key - every key is a non-empty string - sort by ``priority + 0``: not the
    -- priority index, which would step over the rows of every task. No JIT: the
    -- generic plans' estimates are high, their runs short.)
    v_ids := ARRAY(
        SELECT p.id FROM (
            WITH RECURSIVE tasks(name) AS (
                (SELECT e.task_name::text FROM {TABLE} AS e
                 WHERE e.status IN ('pending', 'suspended') ORDER BY e.task_name LIMIT 1)
                UNION ALL
                SELECT (SELECT e.task_name::text FROM {TABLE} AS e
                        WHERE e.status IN ('pending', 'suspended') AND e.task_name > t.name
                        ORDER BY e.task_name LIMIT 1)
                FROM tasks AS t WHERE t.name IS NOT NULL
            ), plain(name) AS (
                SELECT name FROM tasks WHERE name IS NOT NULL AND NOT (name = ANY(p_skip))
            )
            SELECT c.id, c.priority, c.run_at FROM plain CROSS JOIN LATERAL (
                SELECT e.id, e.priority, e.run_at FROM {TABLE} AS e
                WHERE e.task_name = plain.name AND e.flow_key IS NULL AND {RUNNABLE}
                ORDER BY e.task_name, e.flow_key, e.priority DESC, e.run_at LIMIT p_limit
                FOR UPDATE OF e SKIP LOCKED) AS c
            UNION ALL
            SELECT c.id, c.priority, c.run_at FROM plain CROSS JOIN LATERAL (
                SELECT e.id, e.priority, e.run_at FROM {TABLE} AS e
                WHERE e.task_name = plain.name AND e.flow_key > '' AND {RUNNABLE}
                ORDER BY e.priority + 0 DESC, e.run_at LIMIT p_limit
                FOR UPDATE OF e SKIP LOCKED) AS c
        ) AS p ORDER BY p.priority DESC, p.run_at LIMIT p_limit);

    IF cardinality(v_locked) = 0 THEN
        RETURN QUERY UPDATE {TABLE} AS u SET {MARK} WHERE u.id = ANY(v_ids)
            RETURNING {RETURNED};
        RETURN;
    END IF;

    -- Every following statement sees the claims committed before the locks were taken.
    v_rns := array_fill(1::bigint, ARRAY[cardinality(v_ids)]);
    FOR i IN 1 .. cardinality(p_names) LOOP
        v_name := p_names[i];
        CONTINUE WHEN NOT (v_name = ANY(v_locked));
        v_room := p_limit;
        IF p_caps[i] < 2147483647 THEN
            v_room := LEAST(v_room, p_caps[i] - (SELECT COUNT(*) FROM {TABLE} AS r
                                               WHERE r.task_name = v_name
                                               AND r.status = 'running'));
        END IF;
        IF p_task_starts[i] IS NOT NULL THEN
            v_room := LEAST(v_room, p_task_starts[i] - (
                SELECT COUNT(*) FROM {TABLE} AS r WHERE r.task_name = v_name
                AND r.started_at >= p_since[i]));
        END IF;
        CONTINUE WHEN v_room <= 0;
        IF NOT p_keyed[i] THEN
            -- the rows without a key in the order of the key index, the others sorted
            SELECT array_agg(s.id), array_agg(1::bigint) INTO v_more_ids, v_more_rns
            FROM (SELECT b.id FROM (
                    (SELECT e.id, e.priority, e.run_at FROM {TABLE} AS e
                     WHERE e.task_name = v_name AND e.flow_key IS NULL AND {RUNNABLE}
                     ORDER BY e.task_name, e.flow_key, e.priority DESC, e.run_at
                     LIMIT v_room)
                    UNION ALL
                    (SELECT e.id, e.priority, e.run_at FROM {TABLE} AS e
                     WHERE e.task_name = v_name AND e.flow_key > '' AND {RUNNABLE}
                     ORDER BY e.priority + 0 DESC, e.run_at LIMIT v_room)) AS b
                  ORDER BY b.priority DESC, b.run_at LIMIT v_room) AS s;
        ELSE
            v_key_cap := p_key_caps[i];
            v_key_starts := p_key_starts[i];
            v_since := p_since[i];
            v_turn := p_turns[i];
            -- Round-robin: the runnable keys after the turn, then from the first key up
            -- to the turn (a loose index scan, one probe per key), each key's best rows
            -- within what its limits leave; the first row of every key first.
            SELECT array_agg(s.id ORDER BY s.n), array_agg(s.rn ORDER BY s.n)
            INTO v_more_ids, v_more_rns
            FROM (SELECT k_all.id, k_all.rn, ROW_NUMBER() OVER (
                      ORDER BY k_all.rn,
                      CASE WHEN k_all.fk IS NULL THEN 1 WHEN k_all.fk > v_turn THEN 0
                      ELSE 2 END, k_all.fk, k_all.priority DESC, k_all.run_at) AS n
                  FROM (
                    WITH RECURSIVE after_turn(k, id, pr, ra) AS (
                        ({NEXT_KEY.format(after="v_turn", upto="")})
                        UNION ALL
                        SELECT n.* FROM after_turn AS a CROSS JOIN LATERAL (
                            {NEXT_KEY.format(after="a.k", upto="")}) AS n
                    ), upto_turn(k, id, pr, ra) AS (
                        ({NEXT_KEY.format(after="''", upto=" AND e.flow_key <= v_turn")})
                        UNION ALL
                        SELECT n.* FROM upto_turn AS b CROSS JOIN LATERAL (
                            {NEXT_KEY.format(after="b.k", upto=" AND e.flow_key <= v_turn")}
                        ) AS n
                    ), ks(k, id, pr, ra) AS (
                        SELECT * FROM after_turn UNION ALL SELECT * FROM upto_turn
                        LIMIT p_limit
                    ), kr(k, id, pr, ra, room) AS MATERIALIZED (
                        -- what each key's limits leave of the room
                        SELECT ks.k, ks.id, ks.pr, ks.ra, GREATEST(LEAST(v_room,
                            CASE WHEN v_key_cap IS NULL THEN v_room
                            ELSE v_key_cap - (SELECT COUNT(*) FROM {TABLE} AS r
                                WHERE r.task_name = v_name AND r.flow_key = ks.k
                                AND r.status = 'running') END,
                            CASE WHEN v_key_starts IS NULL THEN v_room
                            ELSE v_key_starts - (SELECT COUNT(*) FROM {TABLE} AS r
                                WHERE r.task_name = v_name AND r.flow_key = ks.k
                                AND r.started_at >= v_since) END), 0)
                        FROM ks
                    ), kp(k, id, pr, ra, per) AS (
                        -- every key with room gives its best row (found by the probe),
                        -- so with m such keys no key's row past the (v_room - m + 1)-th
                        -- can be among the v_room taken
                        SELECT k, id, pr, ra, LEAST(room, GREATEST(1, v_room + 1 - (
                            SELECT COUNT(*) FROM kr AS o WHERE o.room > 0)))
                        FROM kr WHERE room > 0
                    )
                    SELECT kp.id, kp.pr AS priority, kp.ra AS run_at, 1::bigint AS rn, kp.k AS fk
                    FROM kp
                    UNION ALL
                    -- the next rows of the keys that may give more than one
                    SELECT c.id, c.priority, c.run_at, 1 + ROW_NUMBER() OVER (
                        PARTITION BY kp.k ORDER BY c.priority DESC, c.run_at), kp.k
                    FROM kp CROSS JOIN LATERAL (
                        SELECT e.id, e.priority, e.run_at FROM {TABLE} AS e
                        WHERE e.task_name = v_name AND e.flow_key = kp.k AND {RUNNABLE}
                        ORDER BY e.task_name, e.flow_key, e.priority DESC, e.run_at
                        OFFSET 1 LIMIT kp.per - 1
                    ) AS c WHERE kp.per > 1
                    UNION ALL
                    SELECT n.id, n.priority, n.run_at, ROW_NUMBER() OVER (
                        ORDER BY n.priority DESC, n.run_at), NULL
                    FROM (SELECT e.id, e.priority, e.run_at FROM {TABLE} AS e
                          WHERE e.task_name = v_name AND e.flow_key IS NULL AND {RUNNABLE}
                          ORDER BY e.task_name, e.flow_key, e.priority DESC, e.run_at
                          LIMIT v_room) AS n
                  ) AS k_all) AS s
            WHERE s.n <= v_room;
        END IF;
        v_ids := v_ids || COALESCE(v_more_ids, '{{}}');
        v_rns := v_rns || COALESCE(v_more_rns, '{{}}');
    END LOOP;

    -- The best p_limit candidates, by round (a key's first row before any key's
    -- second), priority and age; rows of limited tasks are locked here, rechecked.
    RETURN QUERY UPDATE {TABLE} AS u SET {MARK} WHERE u.id = ANY(ARRAY(
        SELECT e.id FROM unnest(v_ids, v_rns) WITH ORDINALITY AS c(id, rn, ord)
        JOIN {TABLE} AS e ON e.id = c.id
        WHERE e.status IN ('pending', 'suspended') AND e.run_at <= p_now
        ORDER BY c.rn, e.priority DESC, e.run_at, c.ord LIMIT p_limit
        FOR UPDATE OF e SKIP LOCKED))
        RETURNING {RETURNED};
END;
$$;
"""

BACKWARD = """
DROP FUNCTION IF EXISTS conductor_django_claim(
    uuid, timestamptz, integer, text[], text[], uuid[], text[], integer[], boolean[],
    integer[], integer[], integer[], timestamptz[], text[], integer);
"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD)


class Migration(migrations.Migration):
    dependencies = [("conductor_django", "0016_finished_notify")]

    operations = [migrations.RunPython(forward, backward, elidable=False)]

-- agent_tasks is a queue: every task is updated at least twice (claim, finish). Free space in
-- each page lets a new row version stay on the page of the old one; frequent autovacuum keeps
-- the due-task and lease indexes free of dead entries as tasks move through their states.
ALTER TABLE agent_tasks SET (
    fillfactor = 70,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02
);

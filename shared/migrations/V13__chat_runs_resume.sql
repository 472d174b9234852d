-- V13: a chat turn's run paused for approval resumes in the scheduler (issue 22, point 5): the
-- decision that leaves no call waiting gives the run a task of its own, which the next
-- scheduler invocation runs; the answer lands in the run's conversation. A run then has a
-- conversation and a task.
ALTER TABLE agent_runs
    DROP CONSTRAINT agent_runs_check,
    ADD CONSTRAINT agent_runs_place_check CHECK (num_nonnulls(task_id, conversation_id) >= 1);

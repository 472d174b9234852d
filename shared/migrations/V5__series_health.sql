-- Recurring series: how many occurrences failed in a row before this one (a completed occurrence
-- resets it). At SCHEDULER_SERIES_FAILURE_LIMIT the series is suspended: its next occurrence
-- waits for a person's approval instead of failing forever in silence.
ALTER TABLE agent_tasks
    ADD COLUMN series_failures integer NOT NULL DEFAULT 0 CHECK (series_failures >= 0);

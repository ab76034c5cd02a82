-- Run once by the postgres image when its volume is empty: a database for pipeline data,
-- apart from the scheduler's store (database "datadog").
CREATE DATABASE warehouse;

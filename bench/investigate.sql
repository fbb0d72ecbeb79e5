-- The summary `exfilwatch investigate --account __ACCOUNT__` prints, as one DuckDB query over
-- the export's Parquet file (bench/investigate.py): per credential, per origin, the hourly
-- timeline per origin and the origins' first sightings, each row as JSON.
WITH base AS (
    SELECT time, account, credential, coalesce(origin, '(no address)') AS origin, bytes,
           operation, collection, user_agent
    FROM read_parquet('__FILE__')
    WHERE account = '__ACCOUNT__'
),
creds AS (
    SELECT account, credential, sum(bytes) AS bytes, count(*) AS requests,
           count(DISTINCT origin) AS origins, min(time) AS first_seen, max(time) AS last_seen
    FROM base GROUP BY account, credential
),
origins AS (
    SELECT origin, sum(bytes) AS bytes, count(*) AS requests, min(time) AS first_seen,
           max(time) AS last_seen, count(DISTINCT credential) AS credential_count,
           string_agg(DISTINCT account || '/' || credential, ', ') AS credentials,
           string_agg(DISTINCT user_agent, ', ') AS user_agents,
           string_agg(DISTINCT operation, ', ') AS operations,
           string_agg(DISTINCT collection, ', ') AS collections
    FROM base GROUP BY origin
),
timeline AS (
    SELECT date_trunc('hour', time) AS hour, origin, sum(bytes) AS bytes, count(*) AS requests
    FROM base GROUP BY 1, 2
)
SELECT 'credentials' AS t, to_json(c) AS row FROM creds c
UNION ALL SELECT 'origins', to_json(o) FROM origins o
UNION ALL SELECT 'timeline', to_json(x) FROM timeline x
UNION ALL SELECT 'first_seen', to_json(f) FROM (SELECT origin, first_seen FROM origins) f

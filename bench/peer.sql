-- The peer: the fixed-threshold core of exfilwatch's unfamiliar_origin_volume rule as one
-- DuckDB query over the same JSON Lines file. Per (account, credential, client IP): bytes read
-- successfully within 24 h of the IP's first appearance for that key. Reports >= 1 GiB, for
-- keys whose account was observed for 7 days first (the learning period).
-- bench/peer.py substitutes __FILE__ and sets DuckDB's thread count.
WITH r AS (
  SELECT
    CAST(time AS TIMESTAMP) AS t,
    lower(regexp_extract(resourceId, '[^/]+$')) AS account,
    CASE
      WHEN coalesce(properties.aadPrincipalId, '') <> '' THEN 'aad:' || lower(properties.aadPrincipalId)
      WHEN coalesce(properties.resourceTokenPermissionId, '') <> '' THEN 'token:' || properties.resourceTokenPermissionId
      WHEN coalesce(properties.keyType, '') <> '' THEN 'key:' || lower(properties.keyType)
      ELSE 'key:' || lower(coalesce(properties.authTokenType, 'unknown'))
    END AS credential,
    properties.clientIpAddress AS ip,
    TRY_CAST(properties.responseLength AS BIGINT) AS bytes,
    TRY_CAST(properties.statusCode AS INTEGER) AS status
  FROM read_json('__FILE__', format = 'newline_delimited', ignore_errors = true, columns = {
    time: 'VARCHAR', resourceId: 'VARCHAR', category: 'VARCHAR',
    properties: 'STRUCT(clientIpAddress VARCHAR, responseLength VARCHAR, statusCode VARCHAR,
                        keyType VARCHAR, authTokenType VARCHAR, aadPrincipalId VARCHAR,
                        resourceTokenPermissionId VARCHAR)'
  })
  WHERE category = 'DataPlaneRequests'
),
ok AS (SELECT * FROM r WHERE (status BETWEEN 200 AND 299) OR status = 304),
acct AS (SELECT account, min(t) AS account_first FROM ok GROUP BY account),
firsts AS (SELECT account, credential, ip, min(t) AS first_seen FROM ok GROUP BY ALL)
SELECT ok.account, ok.credential, ok.ip, min(f.first_seen) AS first_seen, sum(ok.bytes) AS bytes
FROM ok
JOIN firsts f USING (account, credential, ip)
JOIN acct a USING (account)
WHERE ok.t < f.first_seen + INTERVAL 1 DAY
  AND f.first_seen >= a.account_first + INTERVAL 7 DAY
GROUP BY ALL
HAVING sum(ok.bytes) >= 1073741824
ORDER BY bytes DESC

-- Rotating the pseudonymisation secret (docs/operations.md): while a
-- rotation runs, every record carries the merchant's key under the secret
-- being retired too (merchant_key_previous), and `pulih aggregate` writes
-- the pair here the first time a process counts the new key, before the
-- checkpoint that covers the record (rows are the same whenever written).
CREATE TABLE IF NOT EXISTS merchant_key_link
(
    merchant_key  FixedString(32),
    previous_key  FixedString(32),
    first_seen    DateTime('UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY merchant_key;

-- Each linked key's canonical key: the oldest key its links lead to, so a
-- merchant keeps one identity over any number of rotations. `pulih rollup`
-- computes it from merchant_key_link and counts distinct merchants by it;
-- read with FINAL. Internal.
CREATE TABLE IF NOT EXISTS merchant_key_canonical
(
    merchant_key   FixedString(32),
    canonical_key  FixedString(32),
    version        UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY merchant_key;

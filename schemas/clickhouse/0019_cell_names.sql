-- Names of the cells, for dashboards and readers of both databases: every
-- kecamatan with its kota (or kabupaten), and every KBLI 2020 category.
-- `pulih migrate` fills both copies from the reference tables in use
-- (schemas/reference/districts.tsv and kbli2020_categories.tsv, or
-- `reference.districts_file`), again on every run with a higher version;
-- read with FINAL. Join on `district_code`, `kota_code` or `sector`.
-- Reference data is public, so the public database has it too.
CREATE TABLE IF NOT EXISTS {analytics}.districts
(
    district_code  String,
    district_name  String,
    kota_code      String,
    kota_name      String,
    version        UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY district_code;

CREATE TABLE IF NOT EXISTS {public}.districts
(
    district_code  String,
    district_name  String,
    kota_code      String,
    kota_name      String,
    version        UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY district_code;

CREATE TABLE IF NOT EXISTS {analytics}.sectors
(
    sector   String,
    name_id  String,
    name_en  String,
    version  UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY sector;

CREATE TABLE IF NOT EXISTS {public}.sectors
(
    sector   String,
    name_id  String,
    name_en  String,
    version  UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY sector;

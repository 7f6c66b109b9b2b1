-- 3: services handling personal data; withholding grants bounded in time
-- and duration (the single group becomes an open-ended grant of five years'
-- maximum, in force since the beginning); data-subject formats live in
-- `settings`.
ALTER TABLE services ADD COLUMN personal_data INTEGER NOT NULL DEFAULT 0;
CREATE TABLE withholding_grants (
    id              INTEGER PRIMARY KEY,
    grp             TEXT NOT NULL REFERENCES global_groups (id),
    max_duration_ms INTEGER NOT NULL,
    valid_from      INTEGER NOT NULL,
    valid_until     INTEGER
) STRICT;
INSERT INTO withholding_grants (grp, max_duration_ms, valid_from, valid_until)
    SELECT value, 157680000000, 0, NULL FROM settings WHERE key = 'withholding_group';
DELETE FROM settings WHERE key = 'withholding_group';

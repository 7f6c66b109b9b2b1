-- 4: one key, one certificate, enforced by the store; the consent of the
-- member a foreign signing CSR is for.
CREATE UNIQUE INDEX certificates_one_per_key ON certificates (public_key);
ALTER TABLE request_csrs ADD COLUMN consent_by BYTEA;

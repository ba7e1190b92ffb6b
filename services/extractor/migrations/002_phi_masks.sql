-- What was masked in the report before it was read (services.common.phi): one record per
-- identifier, {rule, start, end} in the report text; the identifiers themselves are not repeated.
ALTER TABLE findings ADD COLUMN phi_masks jsonb NOT NULL DEFAULT '[]';

-- The lumbar grading protocol (issue 6): image geometry per instance, the protocol of each read,
-- and votes that carry a grade (and point) per condition x level instead of a verdict.
ALTER TABLE study_objects ADD COLUMN pixel_spacing jsonb;  -- DICOM PixelSpacing (row, column) mm
CREATE INDEX study_objects_series ON study_objects (study_id, series_instance_uid, instance_number);

ALTER TABLE assignments ADD COLUMN protocol text NOT NULL DEFAULT 'cxr-label-verification';

ALTER TABLE votes ALTER COLUMN verdict DROP NOT NULL, ADD COLUMN grades jsonb;

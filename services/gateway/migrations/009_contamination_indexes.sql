-- Ingest refuses a study whose StudyInstanceUID or SOP Instance UIDs are
-- already another study's (the same images under two study ids could land on both sides of a
-- release's split): these make that check an index lookup.
CREATE INDEX IF NOT EXISTS studies_study_instance_uid ON studies (study_instance_uid);
CREATE INDEX IF NOT EXISTS study_objects_sop_instance_uid ON study_objects (sop_instance_uid);

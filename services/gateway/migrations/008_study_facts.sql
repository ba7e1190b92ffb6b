-- Study facts for the reading station (issue 14 §1), read from the de-identified DICOM at ingest:
-- PA and AP change how cardiomegaly is judged, so a reader must see the view. Age is kept as a
-- band only (a decade), never the exact age. The file's own VOI window is kept so the page's
-- window presets can be placed on the real pixel values. NULL: not in the file (or ingested
-- before this migration).
ALTER TABLE studies
    ADD COLUMN view_position text,
    ADD COLUMN patient_sex   text,
    ADD COLUMN age_band      text,
    ADD COLUMN study_date    date,
    ADD COLUMN window_center double precision,
    ADD COLUMN window_width  double precision;

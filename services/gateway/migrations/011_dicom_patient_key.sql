-- Ingest checks the form's patient id against the DICOM's PatientID: a keyed digest of the
-- normalised PatientID (services.common.identifiers.patient_key; never the PatientID itself) is
-- kept per study, so one DICOM patient ingested under a second patient id is refused (two
-- patient ids for one patient could put their studies on both sides of a release's split).
ALTER TABLE studies ADD COLUMN IF NOT EXISTS dicom_patient_key text;
CREATE INDEX IF NOT EXISTS studies_dicom_patient_key ON studies (dicom_patient_key)
    WHERE dicom_patient_key IS NOT NULL;

-- Issue 12: a curator adjudicates a grid protocol's cells (grade and point), recorded beside the
-- rule's decision like label adjudications; and a released study names how it was decided.
ALTER TABLE adjudications ADD COLUMN cells jsonb;

-- Columns appended (a view keeps its existing ones): the effective cells, and who adjudicated.
CREATE OR REPLACE VIEW effective_decisions AS
SELECT d.study_id,
       coalesce(a.accepted, d.accepted) AS accepted,
       coalesce(a.labels, d.labels)     AS labels,
       d.needs_adjudication,
       a.adjudication_id IS NOT NULL    AS adjudicated,
       coalesce(a.cells, d.cells)       AS cells,
       a.curator_id                     AS adjudicator,
       a.adjudication_id
FROM decisions d
LEFT JOIN LATERAL (
    SELECT x.adjudication_id, x.accepted, x.labels, x.cells, x.curator_id FROM adjudications x
    WHERE x.study_id = d.study_id ORDER BY x.seq DESC LIMIT 1
) a ON true;

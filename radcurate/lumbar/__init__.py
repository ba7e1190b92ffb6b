"""Lumbar spine MRI grading protocol (RSNA LumbarDISC): competition-layout I/O, scoring command
and the evaluation of the offline report grader. The grid's terms (`Condition`, `Level`,
`Grade`) are those of `services.common.protocols.lumbar.scoring`."""

"""course: what serves the notebooks. The profile switch, the course's folders and which checkpoint
notebooks 06-08 evaluate (profiles), running every notebook in order (runner, `jepa-lite course`),
and the student versions with each solution stubbed (student). Imports: any lower layer (errors,
core, data, engine, evaluation, interop), besides its own modules; only cli imports it.
"""

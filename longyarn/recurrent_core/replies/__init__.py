"""Reading model replies: tolerant of messy formats, never raising.

Real models rarely answer exactly as asked. They wrap labels in markdown (`**Reason:**`,
`## Short-term memory`), answer in JSON instead of labels (bare, or in a ```json fence with
prose around it), use synonyms ("Summary", "Rationale", "Options"), number their lists in
every way, and stop mid-reply. Each role's parser reads what can be read and returns None (or
fewer items) for the rest; `recurrent_core.step_outputs` then fills every gap with a stated
fallback.

How a reply is read, in order:
1. `clean`: reasoning blocks, leaked chat-template tokens and trailing talk to the user go.
2. `json_repair`: every JSON object or array in the reply is decoded, repaired if cut off,
   and its keys are matched by meaning.
3. `labels`: a line that starts with a known label, however decorated, opens a section that
   runs to the next known label.

One module per role (`opening`, `memory`, `planner`, `writer`, `chooser`, `continuity`, as in
`prompt_files/<role>.md`) holds that role's JSON schema, parser and problem descriptions
(`bible_updates` reads the story bible updates a memory reply may carry);
`roles` finds them by role name; `fallbacks` holds every sentence the user is told.
"""

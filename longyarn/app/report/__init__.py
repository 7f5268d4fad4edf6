"""`longyarn report ID`: a long-form quality report of a stored story.

    figures = story_figures(store, story_id)      # figures.py: every number, no plotting
    html = render(figures)                         # page.py: one self-contained HTML page
    summary_lines(figures)                         # the same figures for the terminal
"""

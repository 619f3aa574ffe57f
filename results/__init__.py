"""Run records -> tables (markdown, LaTeX, CSV) and figures; published numbers as data."""

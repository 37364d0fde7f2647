"""Books made from stories: the e-book export (EPUB 3) of a co-written story."""

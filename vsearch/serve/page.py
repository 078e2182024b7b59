"""The two pages: each one HTML document with a little vanilla JavaScript, no build step.

``{{CSRF}}`` is replaced by the session's token, ``{{TEXT}}`` by whether text search works.
"""

from importlib import resources

#: The link bar both pages start with.
NAV = '<nav><a href="/">Search</a> &middot; <a href="/duplicates">Duplicates</a></nav>'

#: The search page: ``static/search.html`` (its script and stylesheets are in ``static/`` too).
SEARCH_PAGE = (resources.files("vsearch.serve") / "static" / "search.html").read_text(encoding="utf-8") \
    .replace("{{NAV}}", NAV.replace('<a href="/">', '<a href="/" aria-current="page">', 1))

#: The duplicates page: ``static/duplicates.html`` (its script and stylesheet are in ``static/`` too).
DUPLICATES_PAGE = (resources.files("vsearch.serve") / "static" / "duplicates.html").read_text(encoding="utf-8") \
    .replace("{{NAV}}", NAV.replace('<a href="/duplicates">', '<a href="/duplicates" aria-current="page">', 1))

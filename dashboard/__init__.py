"""``ser-dashboard``: a live supervisor view of every call, in the browser.

It only reads Redis: the active-call registry and call events (:mod:`callevents.schema`), the
results streams (:mod:`workers.contract`) and the pool's health (:mod:`workers.status`, as
``ser-status`` shows it). Pages are rendered with :mod:`reports.html` (the same page as
``ser-produce --report``) and updated live over Server-Sent Events.
"""

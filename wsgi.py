"""WSGI entry point: `app` for any WSGI server (e.g. `waitress-serve wsgi:app`).

The settings come from the environment and `.env`; the app refuses to start when
DASHBOARD_HOST is not a loopback address and DASHBOARD_PASSWORD is unset.
"""

from keepa_deals.dashboard import create_app

app = create_app()

"""The dashboard's parts: blueprints (overview, deals, api, auth) and the queries behind them.

`keepa_deals.dashboard.create_app()` assembles them into the Flask app.
"""

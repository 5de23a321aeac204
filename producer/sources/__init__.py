"""Price sources: where quotes come from, behind one interface (`base.MarketDataSource`).

`factory.create_source` alone chooses one from the settings: the GBM simulator
(`simulator`, with its maths in `gbm` and `correlation`) or Massive, by REST snapshots
(`massive_rest`) or the websocket (`massive_ws`). `massive_api` holds the blocking REST
client and the parsing both REST users share; `massive_backfill` fetches the last day of
1 min bars. A source knows nothing about Redis: it hands quotes to a sink.
"""

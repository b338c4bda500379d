"""The venue seam: what qexec asks of an exchange, Binance's answer to it, its websocket feed and its rate budget."""

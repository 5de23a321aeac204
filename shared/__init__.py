"""The pricefeed contract: price model, wire codec, Redis names, settings, seed data.

Imported by the producer, the gateway and third-party consumers; imports neither service.
"""

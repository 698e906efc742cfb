"""stt_core: the sans-I/O STT protocol engine.

Bytes, timestamps and commands go in; datagrams, one timer deadline and events
come out. Nothing here touches a socket, a clock or an event loop.
"""

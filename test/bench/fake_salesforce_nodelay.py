#!/usr/bin/python3
"""test/fakes/fake_salesforce.py with Nagle's algorithm off on its connections.

The fake writes a response's head and body in two send()s. With Nagle on, the body waits for
the client's (delayed, up to 40 ms) ACK of the head, so every API call would take about 40 ms
although the fake answers at once. Same arguments as the fake.
"""
import importlib.util
import os

FAKE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fakes",
                    "fake_salesforce.py")

spec = importlib.util.spec_from_file_location("fake_salesforce", FAKE)
fake = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fake)
fake.Handler.disable_nagle_algorithm = True
fake.main()

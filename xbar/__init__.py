"""xbar: hardware-in-the-loop toolkit for analog deep learning on perovskite memristor crossbars."""

__version__ = "0.1.0"

"""The film's anatomy: where the lungs (and heart) are, their zones, and where the evidence lies in them."""

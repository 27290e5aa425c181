"""Navigate (degradable): directions from the driver's position to the load's next stop."""

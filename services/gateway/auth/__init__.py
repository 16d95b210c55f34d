"""Who is calling: the pass id of a request (`identity`) and the one identity rule at the edge (`access`)."""

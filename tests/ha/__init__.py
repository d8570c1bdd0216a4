"""High availability (DESIGN §8): several real coordinators on one PostgreSQL database, with
real agents, through failures of a coordinator or of the database itself."""

"""AdFlux Events test suite: unit (pure logic), integration (real broker and database), e2e."""

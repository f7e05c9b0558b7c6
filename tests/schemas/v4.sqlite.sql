-- fsml_nb schema version 4 as SQLite creates it; kept to test migrations from it.
CREATE TABLE annotation_answers (
	id INTEGER NOT NULL, 
	project VARCHAR(255) NOT NULL, 
	item_sha256 VARCHAR(64) NOT NULL, 
	annotator VARCHAR(255) NOT NULL, 
	label TEXT NOT NULL, 
	guide_version INTEGER NOT NULL, 
	unsure BOOLEAN NOT NULL, 
	seconds DOUBLE, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(project) REFERENCES annotation_projects (name), 
	FOREIGN KEY(item_sha256) REFERENCES items (sha256), 
	FOREIGN KEY(annotator) REFERENCES annotators (name)
);
CREATE TABLE annotation_guides (
	project VARCHAR(255) NOT NULL, 
	version INTEGER NOT NULL, 
	text TEXT NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (project, version), 
	FOREIGN KEY(project) REFERENCES annotation_projects (name)
);
CREATE TABLE annotation_leases (
	project VARCHAR(255) NOT NULL, 
	item_sha256 VARCHAR(64) NOT NULL, 
	annotator VARCHAR(255) NOT NULL, 
	expires_at DATETIME NOT NULL, 
	PRIMARY KEY (project, item_sha256, annotator), 
	FOREIGN KEY(project) REFERENCES annotation_projects (name), 
	FOREIGN KEY(item_sha256) REFERENCES items (sha256), 
	FOREIGN KEY(annotator) REFERENCES annotators (name)
);
CREATE TABLE annotation_projects (
	name VARCHAR(255) NOT NULL, 
	label_schema TEXT NOT NULL, 
	overlap INTEGER NOT NULL, 
	lease_seconds INTEGER NOT NULL, 
	source_version_id VARCHAR(64), 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (name)
);
CREATE TABLE annotation_questions (
	id INTEGER NOT NULL, 
	project VARCHAR(255) NOT NULL, 
	item_sha256 VARCHAR(64) NOT NULL, 
	annotator VARCHAR(255) NOT NULL, 
	question TEXT NOT NULL, 
	guide_version INTEGER NOT NULL, 
	resolved BOOLEAN NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(project) REFERENCES annotation_projects (name), 
	FOREIGN KEY(item_sha256) REFERENCES items (sha256), 
	FOREIGN KEY(annotator) REFERENCES annotators (name)
);
CREATE TABLE annotation_skips (
	project VARCHAR(255) NOT NULL, 
	item_sha256 VARCHAR(64) NOT NULL, 
	annotator VARCHAR(255) NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (project, item_sha256, annotator), 
	FOREIGN KEY(project) REFERENCES annotation_projects (name), 
	FOREIGN KEY(item_sha256) REFERENCES items (sha256), 
	FOREIGN KEY(annotator) REFERENCES annotators (name)
);
CREATE TABLE annotation_tasks (
	project VARCHAR(255) NOT NULL, 
	item_sha256 VARCHAR(64) NOT NULL, 
	position INTEGER NOT NULL, 
	split VARCHAR(64) NOT NULL, 
	gold_label TEXT, 
	answer_count INTEGER NOT NULL, 
	PRIMARY KEY (project, item_sha256), 
	FOREIGN KEY(project) REFERENCES annotation_projects (name), 
	FOREIGN KEY(item_sha256) REFERENCES items (sha256)
);
CREATE TABLE annotators (
	name VARCHAR(255) NOT NULL, 
	token_sha256 VARCHAR(64) NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (name), 
	UNIQUE (token_sha256)
);
CREATE TABLE crawl_hosts (
	crawl_id VARCHAR(64) NOT NULL, 
	host VARCHAR(255) NOT NULL, 
	next_allowed_at DOUBLE NOT NULL, 
	robots_state VARCHAR(16), 
	robots_txt TEXT, 
	robots_delay DOUBLE NOT NULL, 
	PRIMARY KEY (crawl_id, host), 
	FOREIGN KEY(crawl_id) REFERENCES crawls (id)
);
CREATE TABLE crawl_urls (
	id INTEGER NOT NULL, 
	crawl_id VARCHAR(64) NOT NULL, 
	url TEXT NOT NULL, 
	host VARCHAR(255) NOT NULL, 
	kind VARCHAR(16) NOT NULL, 
	depth INTEGER NOT NULL, 
	found_on TEXT, 
	status VARCHAR(16) NOT NULL, 
	outcome VARCHAR(64), 
	attempts INTEGER NOT NULL, 
	not_before DOUBLE NOT NULL, 
	lease_owner VARCHAR(255), 
	lease_expires DOUBLE, 
	http_status INTEGER, 
	size BIGINT, 
	item_sha256 VARCHAR(64), 
	discovered_at DATETIME NOT NULL, 
	finished_at DATETIME, 
	meta JSON NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(crawl_id) REFERENCES crawls (id), 
	FOREIGN KEY(item_sha256) REFERENCES items (sha256)
);
CREATE TABLE crawls (
	id VARCHAR(64) NOT NULL, 
	created_at DATETIME NOT NULL, 
	config JSON NOT NULL, 
	pages_started INTEGER NOT NULL, 
	bytes_fetched BIGINT NOT NULL, 
	PRIMARY KEY (id)
);
CREATE TABLE dataset_version_names (
	name VARCHAR(255) NOT NULL, 
	version_id VARCHAR(64) NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (name, version_id), 
	FOREIGN KEY(version_id) REFERENCES dataset_versions (id)
);
CREATE TABLE dataset_version_seals (
	version_id VARCHAR(64) NOT NULL, 
	sealed_at DATETIME NOT NULL, 
	PRIMARY KEY (version_id), 
	FOREIGN KEY(version_id) REFERENCES dataset_versions (id)
);
CREATE TABLE dataset_versions (
	id VARCHAR(64) NOT NULL, 
	name VARCHAR(255) NOT NULL, 
	label_schema TEXT NOT NULL, 
	guide_version VARCHAR(255), 
	item_count INTEGER NOT NULL, 
	created_at DATETIME NOT NULL, 
	meta JSON NOT NULL, 
	PRIMARY KEY (id)
);
CREATE TABLE fsml_schema (
	id INTEGER NOT NULL, 
	version INTEGER NOT NULL, 
	PRIMARY KEY (id)
);
CREATE TABLE item_sources (
	id INTEGER NOT NULL, 
	item_sha256 VARCHAR(64) NOT NULL, 
	url TEXT NOT NULL, 
	page_url TEXT, 
	fetched_at DATETIME NOT NULL, 
	licence VARCHAR(255), 
	licence_evidence TEXT, 
	headers JSON NOT NULL, 
	meta JSON NOT NULL, 
	crawl_id VARCHAR(64), 
	PRIMARY KEY (id), 
	FOREIGN KEY(item_sha256) REFERENCES items (sha256), 
	FOREIGN KEY(crawl_id) REFERENCES crawls (id)
);
CREATE TABLE items (
	sha256 VARCHAR(64) NOT NULL, 
	media_type VARCHAR(127) NOT NULL, 
	size BIGINT NOT NULL, 
	source_url TEXT, 
	licence VARCHAR(255), 
	collected_at DATETIME NOT NULL, 
	meta JSON NOT NULL, 
	PRIMARY KEY (sha256)
);
CREATE TABLE labels (
	id INTEGER NOT NULL, 
	item_sha256 VARCHAR(64) NOT NULL, 
	source VARCHAR(255) NOT NULL, 
	label TEXT NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(item_sha256) REFERENCES items (sha256)
);
CREATE TABLE version_entries (
	version_id VARCHAR(64) NOT NULL, 
	item_sha256 VARCHAR(64) NOT NULL, 
	label TEXT NOT NULL, 
	split VARCHAR(64) NOT NULL, 
	PRIMARY KEY (version_id, item_sha256), 
	FOREIGN KEY(version_id) REFERENCES dataset_versions (id), 
	FOREIGN KEY(item_sha256) REFERENCES items (sha256)
);
CREATE INDEX annotation_answers_by_annotator ON annotation_answers (project, annotator, created_at);
CREATE UNIQUE INDEX annotation_answers_one_per_annotator ON annotation_answers (project, item_sha256, annotator);
CREATE INDEX annotation_tasks_order ON annotation_tasks (project, position);
CREATE INDEX crawl_urls_crawl_host_status ON crawl_urls (crawl_id, host, status);
CREATE INDEX crawl_urls_crawl_status ON crawl_urls (crawl_id, status);
CREATE UNIQUE INDEX crawl_urls_crawl_url ON crawl_urls (crawl_id, url);
CREATE INDEX dataset_version_names_by_version ON dataset_version_names (version_id);
CREATE UNIQUE INDEX item_sources_item_url ON item_sources (item_sha256, url);
CREATE INDEX ix_dataset_versions_name ON dataset_versions (name);
CREATE INDEX ix_version_entries_item_sha256 ON version_entries (item_sha256);
CREATE UNIQUE INDEX labels_item_source ON labels (item_sha256, source);
CREATE TRIGGER dataset_version_seals_no_delete BEFORE DELETE ON dataset_version_seals BEGIN SELECT RAISE(ABORT, 'dataset versions are immutable (DELETE on dataset_version_seals)'); END;
CREATE TRIGGER dataset_version_seals_no_update BEFORE UPDATE ON dataset_version_seals BEGIN SELECT RAISE(ABORT, 'dataset versions are immutable (UPDATE on dataset_version_seals)'); END;
CREATE TRIGGER dataset_versions_no_delete BEFORE DELETE ON dataset_versions BEGIN SELECT RAISE(ABORT, 'dataset versions are immutable (DELETE on dataset_versions)'); END;
CREATE TRIGGER dataset_versions_no_update BEFORE UPDATE ON dataset_versions BEGIN SELECT RAISE(ABORT, 'dataset versions are immutable (UPDATE on dataset_versions)'); END;
CREATE TRIGGER version_entries_no_delete BEFORE DELETE ON version_entries BEGIN SELECT RAISE(ABORT, 'dataset versions are immutable (DELETE on version_entries)'); END;
CREATE TRIGGER version_entries_no_update BEFORE UPDATE ON version_entries BEGIN SELECT RAISE(ABORT, 'dataset versions are immutable (UPDATE on version_entries)'); END;
CREATE TRIGGER version_entries_sealed BEFORE INSERT ON version_entries WHEN EXISTS (SELECT 1 FROM dataset_version_seals WHERE version_id = NEW.version_id) BEGIN SELECT RAISE(ABORT, 'dataset versions are immutable (INSERT into a sealed version)'); END;
INSERT INTO fsml_schema (id, version) VALUES (1, 4);

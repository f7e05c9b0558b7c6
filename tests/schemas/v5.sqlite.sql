-- fsml_nb schema version 5 as SQLite creates it; kept to test migrations from it.
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
CREATE TABLE annotation_members (
	project VARCHAR(255) NOT NULL, 
	annotator VARCHAR(255) NOT NULL, 
	added_at DATETIME NOT NULL, 
	PRIMARY KEY (project, annotator), 
	FOREIGN KEY(project) REFERENCES annotation_projects (name), 
	FOREIGN KEY(annotator) REFERENCES annotators (name)
);
CREATE TABLE annotation_offers (
	project VARCHAR(255) NOT NULL, 
	item_sha256 VARCHAR(64) NOT NULL, 
	annotator VARCHAR(255) NOT NULL, 
	offered_at DATETIME NOT NULL, 
	active BOOLEAN NOT NULL, 
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
CREATE TABLE annotation_slots (
	id INTEGER NOT NULL, 
	project VARCHAR(255) NOT NULL, 
	item_sha256 VARCHAR(64) NOT NULL, 
	position INTEGER NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	lease_owner VARCHAR(255), 
	lease_expires DOUBLE, 
	attempts INTEGER NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(project) REFERENCES annotation_projects (name), 
	FOREIGN KEY(item_sha256) REFERENCES items (sha256)
);
CREATE TABLE annotation_tasks (
	project VARCHAR(255) NOT NULL, 
	item_sha256 VARCHAR(64) NOT NULL, 
	position INTEGER NOT NULL, 
	split VARCHAR(64) NOT NULL, 
	gold_label TEXT, 
	PRIMARY KEY (project, item_sha256), 
	FOREIGN KEY(project) REFERENCES annotation_projects (name), 
	FOREIGN KEY(item_sha256) REFERENCES items (sha256)
);
CREATE TABLE annotators (
	name VARCHAR(255) NOT NULL, 
	token_sha256 VARCHAR(64) NOT NULL, 
	created_at DATETIME NOT NULL, 
	disabled_at DATETIME, 
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
CREATE TABLE eval_predictions (
	run_id VARCHAR(32) NOT NULL, 
	item_sha256 VARCHAR(64) NOT NULL, 
	target INTEGER NOT NULL, 
	predicted INTEGER NOT NULL, 
	confidence DOUBLE NOT NULL, 
	loss DOUBLE NOT NULL, 
	scores JSON NOT NULL, 
	PRIMARY KEY (run_id, item_sha256), 
	FOREIGN KEY(run_id) REFERENCES eval_runs (id), 
	FOREIGN KEY(item_sha256) REFERENCES items (sha256)
);
CREATE TABLE eval_runs (
	id VARCHAR(32) NOT NULL, 
	model_id VARCHAR(64) NOT NULL, 
	model_name VARCHAR(255) NOT NULL, 
	dataset_version_id VARCHAR(64) NOT NULL, 
	split VARCHAR(64) NOT NULL, 
	classes JSON NOT NULL, 
	metrics JSON NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(dataset_version_id) REFERENCES dataset_versions (id)
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
	licence_status VARCHAR(16), 
	licence_raw TEXT, 
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
CREATE TABLE licence_claims (
	id INTEGER NOT NULL, 
	crawl_id VARCHAR(64) NOT NULL, 
	url TEXT NOT NULL, 
	page_url TEXT NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	licence VARCHAR(255), 
	raw TEXT, 
	evidence TEXT, 
	claimed_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(crawl_id) REFERENCES crawls (id)
);
CREATE TABLE model_aliases (
	name VARCHAR(255) NOT NULL, 
	alias VARCHAR(255) NOT NULL, 
	version_id VARCHAR(64) NOT NULL, 
	promotion_id INTEGER NOT NULL, 
	updated_at DATETIME NOT NULL, 
	PRIMARY KEY (name, alias), 
	FOREIGN KEY(name) REFERENCES registered_models (name), 
	FOREIGN KEY(version_id) REFERENCES model_versions (id)
);
CREATE TABLE model_promotions (
	id INTEGER NOT NULL, 
	name VARCHAR(255) NOT NULL, 
	alias VARCHAR(255) NOT NULL, 
	kind VARCHAR(16) NOT NULL, 
	from_version_id VARCHAR(64), 
	to_version_id VARCHAR(64) NOT NULL, 
	who VARCHAR(255) NOT NULL, 
	reason TEXT NOT NULL, 
	gates JSON, 
	metrics JSON, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(name) REFERENCES registered_models (name), 
	FOREIGN KEY(from_version_id) REFERENCES model_versions (id), 
	FOREIGN KEY(to_version_id) REFERENCES model_versions (id)
);
CREATE TABLE model_version_files (
	version_id VARCHAR(64) NOT NULL, 
	path VARCHAR(1000) NOT NULL, 
	sha256 VARCHAR(64) NOT NULL, 
	size BIGINT NOT NULL, 
	PRIMARY KEY (version_id, path), 
	FOREIGN KEY(version_id) REFERENCES model_versions (id)
);
CREATE TABLE model_versions (
	id VARCHAR(64) NOT NULL, 
	name VARCHAR(255) NOT NULL, 
	number INTEGER NOT NULL, 
	manifest TEXT NOT NULL, 
	dataset_version_id VARCHAR(64), 
	calibration_version_id VARCHAR(64), 
	registered_by VARCHAR(255) NOT NULL, 
	reason TEXT NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(name) REFERENCES registered_models (name), 
	FOREIGN KEY(dataset_version_id) REFERENCES dataset_versions (id), 
	FOREIGN KEY(calibration_version_id) REFERENCES dataset_versions (id)
);
CREATE TABLE pipeline_runs (
	id VARCHAR(32) NOT NULL, 
	pipeline VARCHAR(255) NOT NULL, 
	spec_path TEXT NOT NULL, 
	parameters JSON NOT NULL, 
	executor VARCHAR(16) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	lease_owner VARCHAR(255), 
	lease_expires DOUBLE, 
	started_at DATETIME NOT NULL, 
	finished_at DATETIME, 
	PRIMARY KEY (id)
);
CREATE TABLE pipeline_steps (
	id INTEGER NOT NULL, 
	run_id VARCHAR(32) NOT NULL, 
	step VARCHAR(255) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	cache_key VARCHAR(64), 
	parameters JSON NOT NULL, 
	outputs JSON NOT NULL, 
	report_sha VARCHAR(64), 
	html_sha VARCHAR(64), 
	seconds DOUBLE, 
	worker VARCHAR(255), 
	finished_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(run_id) REFERENCES pipeline_runs (id)
);
CREATE TABLE registered_models (
	name VARCHAR(255) NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (name)
);
CREATE TABLE registry_events (
	id INTEGER NOT NULL, 
	kind VARCHAR(32) NOT NULL, 
	name VARCHAR(255) NOT NULL, 
	alias VARCHAR(255), 
	version_id VARCHAR(64) NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id)
);
CREATE TABLE serve_clients (
	name VARCHAR(255) NOT NULL, 
	token_sha256 VARCHAR(64) NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (name), 
	UNIQUE (token_sha256)
);
CREATE TABLE serve_workers (
	name VARCHAR(255) NOT NULL, 
	model_name VARCHAR(255) NOT NULL, 
	queue VARCHAR(255) NOT NULL, 
	version_id VARCHAR(64), 
	status VARCHAR(16) NOT NULL, 
	message TEXT, 
	host VARCHAR(255) NOT NULL, 
	pid INTEGER NOT NULL, 
	started_at DATETIME NOT NULL, 
	heartbeat_at DOUBLE NOT NULL, 
	PRIMARY KEY (name)
);
CREATE TABLE served_predictions (
	request_id VARCHAR(64) NOT NULL, 
	role VARCHAR(16) NOT NULL, 
	model_name VARCHAR(255) NOT NULL, 
	model_version VARCHAR(64), 
	input_sha256 VARCHAR(64), 
	label VARCHAR(255), 
	scores JSON, 
	error TEXT, 
	worker VARCHAR(255), 
	latency_ms DOUBLE, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (request_id, role)
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
CREATE TABLE viewers (
	name VARCHAR(255) NOT NULL, 
	token_sha256 VARCHAR(64) NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (name), 
	UNIQUE (token_sha256)
);
CREATE INDEX annotation_answers_by_annotator ON annotation_answers (project, annotator, created_at);
CREATE UNIQUE INDEX annotation_answers_one_per_annotator ON annotation_answers (project, item_sha256, annotator);
CREATE INDEX annotation_slots_by_item ON annotation_slots (project, item_sha256);
CREATE INDEX annotation_slots_by_owner ON annotation_slots (project, lease_owner);
CREATE INDEX annotation_slots_queue ON annotation_slots (project, status, position, id);
CREATE INDEX annotation_tasks_order ON annotation_tasks (project, position);
CREATE INDEX crawl_urls_crawl_host_status ON crawl_urls (crawl_id, host, status);
CREATE INDEX crawl_urls_crawl_status ON crawl_urls (crawl_id, status);
CREATE UNIQUE INDEX crawl_urls_crawl_url ON crawl_urls (crawl_id, url);
CREATE INDEX dataset_version_names_by_version ON dataset_version_names (version_id);
CREATE INDEX eval_runs_by_model ON eval_runs (model_id, created_at);
CREATE INDEX eval_runs_by_version ON eval_runs (dataset_version_id, created_at);
CREATE UNIQUE INDEX item_sources_item_url ON item_sources (item_sha256, url);
CREATE INDEX ix_dataset_versions_name ON dataset_versions (name);
CREATE INDEX ix_version_entries_item_sha256 ON version_entries (item_sha256);
CREATE UNIQUE INDEX labels_item_source ON labels (item_sha256, source);
CREATE UNIQUE INDEX licence_claims_crawl_url_page ON licence_claims (crawl_id, url, page_url);
CREATE INDEX model_promotions_by_alias_time ON model_promotions (name, alias, created_at, id);
CREATE INDEX model_version_files_by_sha256 ON model_version_files (sha256);
CREATE INDEX model_versions_by_dataset_version ON model_versions (dataset_version_id);
CREATE UNIQUE INDEX model_versions_name_number ON model_versions (name, number);
CREATE INDEX pipeline_runs_by_pipeline ON pipeline_runs (pipeline, started_at);
CREATE INDEX pipeline_steps_by_key ON pipeline_steps (step, cache_key);
CREATE INDEX pipeline_steps_by_run ON pipeline_steps (run_id);
CREATE INDEX served_predictions_by_time ON served_predictions (created_at);
CREATE INDEX served_predictions_by_version ON served_predictions (model_version, created_at);
CREATE TRIGGER dataset_version_seals_no_delete BEFORE DELETE ON dataset_version_seals BEGIN SELECT RAISE(ABORT, 'dataset versions are immutable (DELETE on dataset_version_seals)'); END;
CREATE TRIGGER dataset_version_seals_no_update BEFORE UPDATE ON dataset_version_seals BEGIN SELECT RAISE(ABORT, 'dataset versions are immutable (UPDATE on dataset_version_seals)'); END;
CREATE TRIGGER dataset_versions_no_delete BEFORE DELETE ON dataset_versions BEGIN SELECT RAISE(ABORT, 'dataset versions are immutable (DELETE on dataset_versions)'); END;
CREATE TRIGGER dataset_versions_no_update BEFORE UPDATE ON dataset_versions BEGIN SELECT RAISE(ABORT, 'dataset versions are immutable (UPDATE on dataset_versions)'); END;
CREATE TRIGGER model_promotions_no_delete BEFORE DELETE ON model_promotions BEGIN SELECT RAISE(ABORT, 'the promotion log is append-only (DELETE on model_promotions)'); END;
CREATE TRIGGER model_promotions_no_update BEFORE UPDATE ON model_promotions BEGIN SELECT RAISE(ABORT, 'the promotion log is append-only (UPDATE on model_promotions)'); END;
CREATE TRIGGER model_version_files_listed BEFORE INSERT ON model_version_files WHEN NOT EXISTS (SELECT 1 FROM model_versions WHERE id = NEW.version_id AND instr(manifest, '"' || replace(replace(NEW.path, '\', '\\'), '"', '\"') || '":{"sha256":"' || NEW.sha256 || '","size":' || NEW.size || '}') > 0) BEGIN SELECT RAISE(ABORT, 'model versions are immutable (INSERT of a file the manifest does not list)'); END;
CREATE TRIGGER model_version_files_no_delete BEFORE DELETE ON model_version_files BEGIN SELECT RAISE(ABORT, 'model versions are immutable (DELETE on model_version_files)'); END;
CREATE TRIGGER model_version_files_no_update BEFORE UPDATE ON model_version_files BEGIN SELECT RAISE(ABORT, 'model versions are immutable (UPDATE on model_version_files)'); END;
CREATE TRIGGER model_versions_no_delete BEFORE DELETE ON model_versions BEGIN SELECT RAISE(ABORT, 'model versions are immutable (DELETE on model_versions)'); END;
CREATE TRIGGER model_versions_no_update BEFORE UPDATE ON model_versions BEGIN SELECT RAISE(ABORT, 'model versions are immutable (UPDATE on model_versions)'); END;
CREATE TRIGGER version_entries_no_delete BEFORE DELETE ON version_entries BEGIN SELECT RAISE(ABORT, 'dataset versions are immutable (DELETE on version_entries)'); END;
CREATE TRIGGER version_entries_no_update BEFORE UPDATE ON version_entries BEGIN SELECT RAISE(ABORT, 'dataset versions are immutable (UPDATE on version_entries)'); END;
CREATE TRIGGER version_entries_sealed BEFORE INSERT ON version_entries WHEN EXISTS (SELECT 1 FROM dataset_version_seals WHERE version_id = NEW.version_id) BEGIN SELECT RAISE(ABORT, 'dataset versions are immutable (INSERT into a sealed version)'); END;
INSERT INTO fsml_schema (id, version) VALUES (1, 5);

--
-- PostgreSQL database dump
--

\restrict ak0ZJCZfHYJX4ZWQ4BkwtoHp6aGunUzjIgZZfrenXCGaukdMTCp2XXx4UoBNIZy

-- Dumped from database version 15.20 (Debian 15.20-0+deb12u1)
-- Dumped by pg_dump version 15.20 (Debian 15.20-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: changes; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.changes (
    seq bigint NOT NULL,
    job_id text NOT NULL,
    at double precision NOT NULL
);


--
-- Name: changes_seq_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.changes_seq_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: changes_seq_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.changes_seq_seq OWNED BY public.changes.seq;


--
-- Name: deliveries; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.deliveries (
    id bigint NOT NULL,
    job_id text NOT NULL,
    url text NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    parts_done integer DEFAULT 0 NOT NULL,
    next_at double precision,
    delivered_at double precision,
    last_error text,
    lease_owner text,
    lease_until double precision
);


--
-- Name: deliveries_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.deliveries_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: deliveries_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.deliveries_id_seq OWNED BY public.deliveries.id;


--
-- Name: job_live; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.job_live (
    job_id text NOT NULL,
    stage text,
    done integer DEFAULT 0 NOT NULL,
    total integer DEFAULT 0 NOT NULL,
    preview bytea,
    preview_meta text,
    images jsonb
);


--
-- Name: job_logs; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.job_logs (
    id bigint NOT NULL,
    job_id text NOT NULL,
    "timestamp" double precision NOT NULL,
    level text NOT NULL,
    message text NOT NULL
);


--
-- Name: job_logs_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.job_logs_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: job_logs_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.job_logs_id_seq OWNED BY public.job_logs.id;


--
-- Name: jobs; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.jobs (
    seq bigint NOT NULL,
    id text NOT NULL,
    status text NOT NULL,
    batch_key text NOT NULL,
    num_images integer NOT NULL,
    created_at double precision NOT NULL,
    finished_at double precision,
    expires_at double precision,
    cancel_requested boolean DEFAULT false NOT NULL,
    worker_id text,
    lease_until double precision,
    body text NOT NULL,
    priority integer DEFAULT 0 NOT NULL,
    start_by double precision
);


--
-- Name: jobs_seq_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.jobs_seq_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: jobs_seq_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.jobs_seq_seq OWNED BY public.jobs.seq;


--
-- Name: schema_migrations; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.schema_migrations (
    version integer NOT NULL,
    applied_at double precision NOT NULL
);


--
-- Name: session_jobs; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.session_jobs (
    job_id text NOT NULL,
    session_id text NOT NULL,
    owner text,
    delivered boolean DEFAULT false NOT NULL,
    created_at double precision NOT NULL
);


--
-- Name: workers; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.workers (
    id text NOT NULL,
    body text NOT NULL
);


--
-- Name: changes seq; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.changes ALTER COLUMN seq SET DEFAULT nextval('public.changes_seq_seq'::regclass);


--
-- Name: deliveries id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.deliveries ALTER COLUMN id SET DEFAULT nextval('public.deliveries_id_seq'::regclass);


--
-- Name: job_logs id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.job_logs ALTER COLUMN id SET DEFAULT nextval('public.job_logs_id_seq'::regclass);


--
-- Name: jobs seq; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.jobs ALTER COLUMN seq SET DEFAULT nextval('public.jobs_seq_seq'::regclass);


--
-- Data for Name: changes; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.changes VALUES (1, '883ec228-7f23-4ecb-b244-81c0159ef3f8', 1796289789.1036508);
INSERT INTO public.changes VALUES (2, 'bb8ee5ea-6f6d-48d7-a408-b773aff7366a', 1796289789.1061087);
INSERT INTO public.changes VALUES (3, 'b1bd2403-31ad-49cc-a7ba-0ee60a5ee2dc', 1796289789.1079662);
INSERT INTO public.changes VALUES (4, 'c1b7e43f-76d8-48c8-b4a2-41ab26c0b8e0', 1796289789.1099849);
INSERT INTO public.changes VALUES (5, '0744b839-6aca-469f-b43f-a8e37be42661', 1796289789.1170123);
INSERT INTO public.changes VALUES (6, '3df5e60d-7f7d-479c-9899-02859a3edfec', 1796289789.1189654);
INSERT INTO public.changes VALUES (7, 'ce1de6ea-4889-4ccd-8701-dfa50d7708b0', 1796289789.1206338);
INSERT INTO public.changes VALUES (8, '883ec228-7f23-4ecb-b244-81c0159ef3f8', 1796289789.1242814);
INSERT INTO public.changes VALUES (9, 'bb8ee5ea-6f6d-48d7-a408-b773aff7366a', 1796289789.1270123);
INSERT INTO public.changes VALUES (10, 'b1bd2403-31ad-49cc-a7ba-0ee60a5ee2dc', 1796289789.1295116);
INSERT INTO public.changes VALUES (11, '883ec228-7f23-4ecb-b244-81c0159ef3f8', 1796289789.1313138);
INSERT INTO public.changes VALUES (12, '883ec228-7f23-4ecb-b244-81c0159ef3f8', 1796289789.133785);
INSERT INTO public.changes VALUES (13, 'bb8ee5ea-6f6d-48d7-a408-b773aff7366a', 1796289789.1376734);
INSERT INTO public.changes VALUES (14, 'b1bd2403-31ad-49cc-a7ba-0ee60a5ee2dc', 1796289789.1392367);
INSERT INTO public.changes VALUES (15, 'b1bd2403-31ad-49cc-a7ba-0ee60a5ee2dc', 1796289789.1406982);
INSERT INTO public.changes VALUES (16, 'b1bd2403-31ad-49cc-a7ba-0ee60a5ee2dc', 1796289789.142946);
INSERT INTO public.changes VALUES (17, 'c1b7e43f-76d8-48c8-b4a2-41ab26c0b8e0', 1796289789.1449995);
INSERT INTO public.changes VALUES (18, 'c1b7e43f-76d8-48c8-b4a2-41ab26c0b8e0', 1796289789.1461933);


--
-- Data for Name: deliveries; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.deliveries VALUES (1, '883ec228-7f23-4ecb-b244-81c0159ef3f8', 'https://example.com/hook', 0, 0, 1796289789.1330574, NULL, NULL, NULL, NULL);


--
-- Data for Name: job_live; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.job_live VALUES ('b1bd2403-31ad-49cc-a7ba-0ee60a5ee2dc', 'dit', 3, 12, '\xffd86a706567', '{"content_type": "image/jpeg", "width": 12, "height": 8, "image": 0, "step": 3, "steps": 12}', '[{"cost": 0.01, "nsfw": false, "image": {"key": "pfx-running-0.png", "seed": 4242, "width": 96, "height": 64, "file_size": 123, "content_type": "image/png"}, "index": 0}]');


--
-- Data for Name: job_logs; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.job_logs VALUES (1, '883ec228-7f23-4ecb-b244-81c0159ef3f8', 1796289789.1307116, 'INFO', 'Generating 2 image(s)');
INSERT INTO public.job_logs VALUES (2, 'c1b7e43f-76d8-48c8-b4a2-41ab26c0b8e0', 1796289789.14583, 'WARN', 'Cancelled: cancelled before it started');


--
-- Data for Name: jobs; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.jobs VALUES (5, '0744b839-6aca-469f-b43f-a8e37be42661', 'queued', '96x64/12/2.5/0', 2, 1780000006, NULL, NULL, false, NULL, NULL, '{"id":"0744b839-6aca-469f-b43f-a8e37be42661","api":"fal","app":"fal-ai/glm-image","request":{"prompt":"a sign that reads ''queued''","width":96,"height":64,"num_inference_steps":12,"guidance_scale":2.5,"seed":4242,"num_images":2,"references":[]},"output":{"format":"jpeg","quality":95,"safety_check":false,"expand_prompt":false,"webhook_url":null,"upload_url":null,"ttl_s":null,"text_check":false,"keep_best":0},"status":"queued","created_at":1780000006.0,"started_at":null,"finished_at":null,"attempts":0,"worker_id":null,"cancel_requested":false,"file_prefix":"pfx-queued","base_url":"http://old.example/","options":{"sync_mode":false},"owner":"owner-a","priority":"normal","start_by":null,"result":null,"error":null}', 0, NULL);
INSERT INTO public.jobs VALUES (6, '3df5e60d-7f7d-479c-9899-02859a3edfec', 'queued', '96x64/12/2.5/0', 2, 1780000003, NULL, NULL, false, NULL, NULL, '{"id":"3df5e60d-7f7d-479c-9899-02859a3edfec","api":"fal","app":"fal-ai/glm-image","request":{"prompt":"a sign that reads ''low''","width":96,"height":64,"num_inference_steps":12,"guidance_scale":2.5,"seed":4242,"num_images":2,"references":[]},"output":{"format":"jpeg","quality":95,"safety_check":false,"expand_prompt":false,"webhook_url":null,"upload_url":null,"ttl_s":null,"text_check":false,"keep_best":0},"status":"queued","created_at":1780000003.0,"started_at":null,"finished_at":null,"attempts":0,"worker_id":null,"cancel_requested":false,"file_prefix":"pfx-low","base_url":"http://old.example/","options":{"sync_mode":false},"owner":"owner-a","priority":"low","start_by":4000000000.0,"result":null,"error":null}', 1, 4000000000);
INSERT INTO public.jobs VALUES (7, 'ce1de6ea-4889-4ccd-8701-dfa50d7708b0', 'queued', '96x64/12/2.5/1', 2, 1780000004, NULL, NULL, false, NULL, NULL, '{"id":"ce1de6ea-4889-4ccd-8701-dfa50d7708b0","api":"fal","app":"fal-ai/glm-image","request":{"prompt":"a sign that reads ''edit''","width":96,"height":64,"num_inference_steps":12,"guidance_scale":2.5,"seed":4242,"num_images":2,"references":["https://example.com/ref.png"]},"output":{"format":"jpeg","quality":95,"safety_check":false,"expand_prompt":false,"webhook_url":null,"upload_url":null,"ttl_s":null,"text_check":false,"keep_best":0},"status":"queued","created_at":1780000004.0,"started_at":null,"finished_at":null,"attempts":0,"worker_id":null,"cancel_requested":false,"file_prefix":"pfx-edit","base_url":"http://old.example/","options":{"sync_mode":false},"owner":"owner-a","priority":"normal","start_by":null,"result":null,"error":null}', 0, NULL);
INSERT INTO public.jobs VALUES (3, 'b1bd2403-31ad-49cc-a7ba-0ee60a5ee2dc', 'running', '96x64/12/2.5/0', 2, 1780000007, NULL, NULL, false, 'w1', 1796293389.1280787, '{"id":"b1bd2403-31ad-49cc-a7ba-0ee60a5ee2dc","api":"fal","app":"fal-ai/glm-image","request":{"prompt":"a sign that reads ''running''","width":96,"height":64,"num_inference_steps":12,"guidance_scale":2.5,"seed":4242,"num_images":2,"references":[]},"output":{"format":"jpeg","quality":95,"safety_check":false,"expand_prompt":false,"webhook_url":null,"upload_url":null,"ttl_s":null,"text_check":false,"keep_best":0},"status":"running","created_at":1780000007.0,"started_at":1796289789.1280787,"finished_at":null,"attempts":1,"worker_id":"w1","cancel_requested":false,"file_prefix":"pfx-running","base_url":"http://old.example/","options":{"sync_mode":false},"owner":"owner-a","priority":"normal","start_by":null,"result":null,"error":null}', 0, NULL);
INSERT INTO public.jobs VALUES (2, 'bb8ee5ea-6f6d-48d7-a408-b773aff7366a', 'failed', '96x64/12/2.5/0', 2, 1780000006, 1796289789.1371787, NULL, false, 'w1', NULL, '{"id":"bb8ee5ea-6f6d-48d7-a408-b773aff7366a","api":"openai","app":"fal-ai/glm-image","request":{"prompt":"a sign that reads ''failed''","width":96,"height":64,"num_inference_steps":12,"guidance_scale":2.5,"seed":4242,"num_images":2,"references":[]},"output":{"format":"jpeg","quality":95,"safety_check":false,"expand_prompt":false,"webhook_url":null,"upload_url":null,"ttl_s":null,"text_check":false,"keep_best":0},"status":"failed","created_at":1780000006.0,"started_at":1796289789.125558,"finished_at":1796289789.1371787,"attempts":1,"worker_id":"w1","cancel_requested":false,"file_prefix":"pfx-failed","base_url":"http://old.example/","options":{"sync_mode":false},"owner":"owner-a","priority":"normal","start_by":null,"result":null,"error":{"kind":"input","message":"bad reference","field":"references[0]"}}', 0, NULL);
INSERT INTO public.jobs VALUES (4, 'c1b7e43f-76d8-48c8-b4a2-41ab26c0b8e0', 'cancelled', '96x64/12/2.5/0', 2, 1780000009, 1796289789.1445177, NULL, true, NULL, NULL, '{"id":"c1b7e43f-76d8-48c8-b4a2-41ab26c0b8e0","api":"runware","app":"fal-ai/glm-image","request":{"prompt":"a sign that reads ''cancelled''","width":96,"height":64,"num_inference_steps":12,"guidance_scale":2.5,"seed":4242,"num_images":2,"references":[]},"output":{"format":"jpeg","quality":95,"safety_check":false,"expand_prompt":false,"webhook_url":null,"upload_url":null,"ttl_s":null,"text_check":false,"keep_best":0},"status":"cancelled","created_at":1780000009.0,"started_at":null,"finished_at":1796289789.1445177,"attempts":0,"worker_id":null,"cancel_requested":true,"file_prefix":"pfx-cancelled","base_url":"http://old.example/","options":{"sync_mode":false},"owner":"owner-a","priority":"normal","start_by":null,"result":null,"error":{"kind":"cancelled","message":"cancelled before it started","field":null}}', 0, NULL);
INSERT INTO public.jobs VALUES (1, '883ec228-7f23-4ecb-b244-81c0159ef3f8', 'succeeded', '96x64/12/2.5/0', 2, 1780000009, 1796289789.1330574, 1796293389.1330574, false, 'w1', NULL, '{"id":"883ec228-7f23-4ecb-b244-81c0159ef3f8","api":"fal","app":"fal-ai/glm-image","request":{"prompt":"a sign that reads ''succeeded''","width":96,"height":64,"num_inference_steps":12,"guidance_scale":2.5,"seed":4242,"num_images":2,"references":[]},"output":{"format":"png","quality":95,"safety_check":false,"expand_prompt":false,"webhook_url":"https://example.com/hook","upload_url":null,"ttl_s":3600.0,"text_check":false,"keep_best":0},"status":"succeeded","created_at":1780000009.0,"started_at":1796289789.1216788,"finished_at":1796289789.1330574,"attempts":1,"worker_id":"w1","cancel_requested":false,"file_prefix":"pfx-succeeded","base_url":"http://old.example/","options":{"sync_mode":false},"owner":"owner-a","priority":"normal","start_by":null,"result":{"images":[{"key":"pfx-succeeded-0.png","content_type":"image/png","width":96,"height":64,"file_size":123,"seed":4242},{"key":"pfx-succeeded-1.png","content_type":"image/png","width":96,"height":64,"file_size":124,"seed":4243}],"prompt":"a sign that reads ''succeeded''","has_nsfw_concepts":[false,true],"timings":{"ar":1.0,"dit":2.0,"inference":3.5},"cost":0.0123,"text_checks":[{"score":0.5,"spans":[{"text":"succeeded","found":false,"similarity":0.5}],"detected_text":"succ"},{"score":0.5,"spans":[{"text":"succeeded","found":false,"similarity":0.5}],"detected_text":"succ"}]},"error":null}', 0, NULL);


--
-- Data for Name: schema_migrations; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.schema_migrations VALUES (1, 1796289789.0903122);
INSERT INTO public.schema_migrations VALUES (2, 1796289789.0934813);
INSERT INTO public.schema_migrations VALUES (3, 1796289789.1003494);


--
-- Data for Name: session_jobs; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.session_jobs VALUES ('c1b7e43f-76d8-48c8-b4a2-41ab26c0b8e0', '5f0c4a52-3a0e-4f55-9a55-8f6b7d1e2c3a', 'owner-a', true, 1796289789.1482916);


--
-- Data for Name: workers; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.workers VALUES ('w1', '{"id":"w1","pid":123,"device":"cpu","state":"busy","jobs":["b1bd2403-31ad-49cc-a7ba-0ee60a5ee2dc"],"heartbeat_at":1780000000.0,"started_at":1780000000.0,"restarts":0,"detail":""}');


--
-- Name: changes_seq_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.changes_seq_seq', 18, true);


--
-- Name: deliveries_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.deliveries_id_seq', 1, true);


--
-- Name: job_logs_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.job_logs_id_seq', 2, true);


--
-- Name: jobs_seq_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.jobs_seq_seq', 7, true);


--
-- Name: changes changes_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.changes
    ADD CONSTRAINT changes_pkey PRIMARY KEY (seq);


--
-- Name: deliveries deliveries_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.deliveries
    ADD CONSTRAINT deliveries_pkey PRIMARY KEY (id);


--
-- Name: job_live job_live_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.job_live
    ADD CONSTRAINT job_live_pkey PRIMARY KEY (job_id);


--
-- Name: job_logs job_logs_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.job_logs
    ADD CONSTRAINT job_logs_pkey PRIMARY KEY (id);


--
-- Name: jobs jobs_id_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.jobs
    ADD CONSTRAINT jobs_id_key UNIQUE (id);


--
-- Name: jobs jobs_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.jobs
    ADD CONSTRAINT jobs_pkey PRIMARY KEY (seq);


--
-- Name: schema_migrations schema_migrations_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.schema_migrations
    ADD CONSTRAINT schema_migrations_pkey PRIMARY KEY (version);


--
-- Name: session_jobs session_jobs_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.session_jobs
    ADD CONSTRAINT session_jobs_pkey PRIMARY KEY (job_id);


--
-- Name: workers workers_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.workers
    ADD CONSTRAINT workers_pkey PRIMARY KEY (id);


--
-- Name: changes_by_time; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX changes_by_time ON public.changes USING btree (at);


--
-- Name: deliveries_by_job; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX deliveries_by_job ON public.deliveries USING btree (job_id);


--
-- Name: deliveries_due; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX deliveries_due ON public.deliveries USING btree (next_at) WHERE (next_at IS NOT NULL);


--
-- Name: job_logs_by_job; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX job_logs_by_job ON public.job_logs USING btree (job_id, id);


--
-- Name: jobs_expiry; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX jobs_expiry ON public.jobs USING btree (expires_at);


--
-- Name: jobs_finished; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX jobs_finished ON public.jobs USING btree (finished_at);


--
-- Name: jobs_leases; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX jobs_leases ON public.jobs USING btree (lease_until) WHERE (status = 'running'::text);


--
-- Name: jobs_queue; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX jobs_queue ON public.jobs USING btree (priority, seq) WHERE (status = 'queued'::text);


--
-- Name: jobs_queued; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX jobs_queued ON public.jobs USING btree (batch_key, priority, seq) WHERE (status = 'queued'::text);


--
-- Name: jobs_running; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX jobs_running ON public.jobs USING btree (worker_id) WHERE (status = 'running'::text);


--
-- Name: jobs_start_by; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX jobs_start_by ON public.jobs USING btree (start_by) WHERE ((status = 'queued'::text) AND (start_by IS NOT NULL));


--
-- Name: session_jobs_by_session; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX session_jobs_by_session ON public.session_jobs USING btree (session_id, created_at);


--
-- PostgreSQL database dump complete
--

\unrestrict ak0ZJCZfHYJX4ZWQ4BkwtoHp6aGunUzjIgZZfrenXCGaukdMTCp2XXx4UoBNIZy


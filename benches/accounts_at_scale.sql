-- The accounts the substring benchmarks search: 1,000,009 across 100 workspaces, 100,000 of
-- them in the workspace $WS$ (which must exist; the others are made here). Names
-- "<Word> <Word> <n>" from 40 x 40 words: "cme Rob" is only "Acme Robotics …", one name in
-- 1,600. Domains "acme-robotics123.example". The change-event trigger is off for the load.
-- Used by benches/substring_search.sh and the large-data runs of benches/mcp, which put the
-- workspace's quoted id in place of $WS$.
SET session_replication_role = replica;
INSERT INTO hdls.workspaces (workspace_id, name)
SELECT ('00000000-0000-0000-0000-' || lpad(to_hex(w), 12, '0'))::uuid, 'bench ' || w
FROM generate_series(2, 100) w;
CREATE TEMP TABLE words (a text[], b text[]);
INSERT INTO words VALUES (
 ARRAY['Acme','Globex','Initech','Umbrella','Hooli','Stark','Wayne','Wonka','Tyrell','Cyberdyne',
       'Soylent','Vandelay','Pied','Gringotts','Oscorp','Monarch','Aperture','Massive','Dunder','Vehement',
       'Sterling','Prestige','Nakatomi','Virtucon','Gekko','Ollivander','Zorg','Krusty','Duff','Bluth',
       'Sirius','Ajax','Cogswell','Spacely','Nordic','Northwind','Contoso','Fabrikam','Tailspin','Woodgrove'],
 ARRAY['Robotics','Logistics','Systems','Foods','Pharma','Energy','Media','Labs','Capital','Motors',
       'Textiles','Mining','Airlines','Insurance','Software','Hardware','Retail','Foundry','Brewing','Shipping',
       'Analytics','Dynamics','Holdings','Partners','Ventures','Industries','Solutions','Networks','Studios','Outfitters',
       'Chemicals','Apparel','Aerospace','Biotech','Consulting','Telecom','Records','Farms','Optics','Paper']);
INSERT INTO crm.accounts (workspace_id, id, name, domain, custom, created_at, updated_at)
SELECT g.ws, gen_random_uuid(),
       words.a[1 + (g.h % 40)] || ' ' || words.b[1 + ((g.h / 40) % 40)] || ' ' || g.n,
       lower(words.a[1 + (g.h % 40)]) || '-' || lower(words.b[1 + ((g.h / 40) % 40)]) || g.n || '.example',
       '{}', now(), now()
FROM (SELECT CASE WHEN w = 1 THEN $WS$::uuid
                  ELSE ('00000000-0000-0000-0000-' || lpad(to_hex(w), 12, '0'))::uuid END AS ws, n,
             abs(hashint8(w * 1000003 + n)) AS h
      FROM generate_series(1, 100) w
      CROSS JOIN LATERAL generate_series(1, CASE WHEN w = 1 THEN 100000 ELSE 9091 END) n) g,
     words;

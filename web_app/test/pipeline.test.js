// The whole generation loop (StableDiffusionPipeline.generate) against the golden trajectory: the golden
// rule feeds the recorded UNet predictions in place of the client's own UNet call (docs/golden-vectors.md),
// so the graph runner here replays them; everything else (tokenizer, randn, scheduler, CFG, both unet_batch
// modes, the chunk dictionary) is the client's own code.

import test from 'node:test';
import assert from 'node:assert/strict';
import { section, array, slice, relL2, readText } from './golden.js';
import { BPETokenizer } from '../src/core/bpe_tokenizer.js';
import { BundleManifest } from '../src/core/bundle_manifest.js';
import { ResourceManager } from '../src/core/resource_manager.js';
import { StableDiffusionPipeline } from '../src/core/pipeline.js';

const trajectory = section('trajectory');
const schedulers = section('schedulers');
const tok = section('tokenizer');
const tokenizer = new BPETokenizer(JSON.parse(readText(tok.vocab)), readText(tok.merges), {
  bosId: tok.bos_id, eosId: tok.eos_id, padId: tok.pad_id, maxLength: tok.max_length,
});
const TOL = 2e-6;
const D = 8;   // width of the replayed text context: any value works, the replay reads only which prompt it is

function manifestFor(unetBatch, latentShape) {
  const [c, h, w] = latentShape.slice(1);
  const t = (name, shape, dtype = 'float32') => ({ name, shape, dtype });
  const graph = (name, role, inputs, outputs, meta = {}) => ({ name, role, file: `${name}.tflite`, format: 'tflite', inputs, outputs, meta });
  return {
    format: 'mobilesd-bundle', format_version: 2, target: 'web', bundle_id: 'web-0000000000000000',
    cfg: { mode: unetBatch === 2 ? 'batch' : 'sequential', unet_batch: unetBatch, default_guidance: 7.5, negative_prompt_default: '' },
    scheduler: { default: 'dpm', supported: ['dpm', 'euler', 'ddim', 'lcm'], config: 'scheduler/scheduler_config.json' },
    unet: { chunks: ['unet'] },
    graphs: [
      graph('text_encoder', 'text_encoder', [t('input_ids', [1, 77], 'int32')], [t('last_hidden_state', [1, 77, D])]),
      graph('unet', 'unet', [t('sample', [unetBatch, c, h, w]), t('timestep', [1]), t('encoder_hidden_states', [unetBatch, 77, D])],
        [t('noise_pred', [unetBatch, c, h, w])], { aliases: {} }),
      graph('vae_decoder', 'vae_decoder', [t('latent', [1, c, h, w])], [t('image', [1, 4 * h, 4 * w, 3])]),
    ],
    files: {},
  };
}

/** Stand-in graph bytes: the replay runner compiles nothing. */
function graphFiles(manifest) {
  const m = manifest.manifest ?? manifest;
  return new Map(m.graphs.map((g) => [g.file, new Uint8Array(0)]));
}

/** Replays the golden trajectory: checks what the pipeline feeds each graph, answers with the recorded outputs. */
class ReplayRunner {
  constructor(c) {
    this.c = c;
    this.ids = array(trajectory.input_ids);
    this.inputs = array(c.unet_inputs);
    this.preds = array(c.unet_predictions);
    this.image = array(c.image);
    this.calls = 0;      // UNet calls so far
    this.inputErrors = [];
  }

  async load() {}

  unload() {}

  async run(name, inputs) {
    if (name === 'text_encoder') {
      const ids = Array.from(inputs.input_ids.data);
      const which = [0, 1].find((k) => ids.every((v, i) => v === this.ids[k * 77 + i]));
      assert.notEqual(which, undefined, 'the text encoder got ids that are neither the negative prompt nor the prompt');
      return { outputs: [new Float32Array(77 * D).fill(which)], graphSeconds: 0 };
    }
    if (name === 'unet') {
      const perStep = slice(this.inputs, this.c.unet_inputs.shape, 0).length;   // [2, C, h, w]
      const half = perStep / 2;
      const batch = inputs.sample.data.length / half;
      const ctx = inputs.encoder_hidden_states.data;
      const stepsDone = Math.floor(this.calls / (batch === 2 ? 1 : 2));
      const refIn = slice(this.inputs, this.c.unet_inputs.shape, stepsDone);
      const refPred = slice(this.preds, this.c.unet_predictions.shape, stepsDone);
      this.calls++;
      if (batch === 2) {
        assert.equal(ctx[0], 0, 'batch order: the unconditional context first');
        assert.equal(ctx[77 * D], 1, 'batch order: the conditional context second');
        this.inputErrors.push(relL2(inputs.sample.data, refIn));
        return { outputs: [refPred.slice()], graphSeconds: 0 };
      }
      const k = ctx[0];   // 0: unconditional half, 1: conditional half
      this.inputErrors.push(relL2(inputs.sample.data, refIn.subarray(k * half, (k + 1) * half)));
      return { outputs: [refPred.slice(k * half, (k + 1) * half)], graphSeconds: 0 };
    }
    return { outputs: [this.image.slice()], graphSeconds: 0 };
  }
}

for (const c of trajectory.cases) {
  for (const unetBatch of [2, 1]) {
    test(`trajectory ${c.scheduler}, unet_batch ${unetBatch}: latents within ${TOL} of PyTorch`, async () => {
      const s = trajectory.settings;
      const manifest = new BundleManifest(manifestFor(unetBatch, c.noise.shape));
      const runner = new ReplayRunner(c);
      const resources = new ResourceManager(manifest, graphFiles(manifest), runner);
      const pipe = new StableDiffusionPipeline(resources, tokenizer, schedulers.configs.sd_epsilon);
      const res = await pipe.generate({ prompt: s.prompt, negativePrompt: s.negative_prompt, steps: s.steps,
        guidance: s.guidance, seed: s.seed, scheduler: c.scheduler });
      assert.deepEqual(res.timesteps, c.timesteps, 'timesteps');
      const latents = array(c.latents);
      const err = relL2(res.latent, slice(latents, c.latents.shape, s.steps));
      assert.ok(err <= TOL, `final latent rel. L2 ${err}`);
      const worstIn = Math.max(...runner.inputErrors);
      assert.ok(worstIn <= TOL, `UNet inputs rel. L2 up to ${worstIn}`);
      assert.equal(runner.calls, s.steps * (unetBatch === 2 ? 1 : 2));
      assert.equal(res.image.length, array(c.image).length);
      assert.deepEqual(Object.keys(res.timer.stages).sort(), ['end_to_end', 'text_encoder', 'unet_chunk_0', 'unet_step', 'vae_decoder']);
    });
  }
}

test('a scheduler the bundle does not list is refused before anything runs', async () => {
  const manifest = manifestFor(2, [1, 4, 8, 8]);
  manifest.scheduler.supported = ['dpm'];
  const runner = new ReplayRunner(trajectory.cases[0]);
  const pipe = new StableDiffusionPipeline(new ResourceManager(new BundleManifest(manifest), graphFiles(manifest), runner), tokenizer,
    schedulers.configs.sd_epsilon);
  await assert.rejects(pipe.generate({ prompt: 'x', scheduler: 'euler' }), /scheduler "euler" is not one this bundle supports/);
  assert.equal(runner.calls, 0);
});

test('pixels are numpy round(x * 255) in float32 (ties to even)', async () => {
  const { Decoder } = await import('../src/core/decoder.js');
  assert.deepEqual(Array.from(Decoder.toRGB8(new Float32Array([0, 1, 0.5, 2.5 / 255, 3.5 / 255, 1.2, -0.1]))),
    [0, 255, 128, 2, 4, 255, 0]);
});

/**
 * The validated, normalised shape of a LLaVA checkpoint's config.json: every field the engine
 * reads, with transformers' defaults applied, so no other module looks at raw JSON.
 */

export type VisionModelType = 'clip_vision_model' | 'siglip_vision_model';
export type TextModelType = 'llama' | 'mistral' | 'qwen2';

/** Activation names as transformers spells them (ACT2FN keys). */
export type Activation = 'gelu' | 'gelu_pytorch_tanh' | 'gelu_new' | 'quick_gelu' | 'silu' | 'relu';

export interface VisionConfig {
  modelType: VisionModelType;
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  numChannels: number;
  imageSize: number;
  patchSize: number;
  hiddenAct: Activation;
  layerNormEps: number;
}

export interface TextConfig {
  modelType: TextModelType;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  numKeyValueHeads: number;
  headDim: number;
  hiddenAct: Activation;
  rmsNormEps: number;
  ropeTheta: number;
  maxPositionEmbeddings: number;
  /** Bias on q_proj, k_proj, v_proj (Qwen2 always; LLaMA when attention_bias). */
  qkvBias: boolean;
  /** Bias on o_proj (LLaMA when attention_bias; never Qwen2/Mistral). */
  oBias: boolean;
  /** Bias on gate/up/down (LLaMA mlp_bias). */
  mlpBias: boolean;
  tieWordEmbeddings: boolean;
  bosTokenId: number | null;
  eosTokenIds: number[];
  padTokenId: number | null;
}

export interface LlavaConfig {
  /** Absolute path of the checkpoint folder. */
  dir: string;
  vision: VisionConfig;
  text: TextConfig;
  imageTokenIndex: number;
  /** Indices into the vision tower's hidden_states (0 = embeddings); negatives already resolved. */
  visionFeatureLayers: number[];
  visionFeatureSelectStrategy: 'default' | 'full';
  projectorHiddenAct: Activation;
  projectorBias: boolean;
}
